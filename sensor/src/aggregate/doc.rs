//! The `event_type: campaign` document: one per campaign when it closes (its window passed, or
//! the table was full) and one per campaign still open when a run or an analysis ends. Field
//! names are part of the documented schema (docs/event-schema.md): add fields, never rename.

use serde::Serialize;

use super::campaign::CampaignSummary;
use crate::{clock::rfc3339_micros, output::json::SCHEMA_VERSION};

#[derive(Serialize)]
pub struct CampaignDoc<'a> {
    /// When the document was written.
    pub timestamp: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub campaign: &'a CampaignSummary,
}

impl<'a> CampaignDoc<'a> {
    pub fn new(wall_ns: u64, campaign: &'a CampaignSummary) -> Self {
        Self {
            timestamp: rfc3339_micros(wall_ns),
            event_type: "campaign",
            schema_version: SCHEMA_VERSION,
            campaign,
        }
    }
}
