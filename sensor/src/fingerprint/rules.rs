//! Rule files: the TOML format, its validation, and the compiled form the engine evaluates.
//!
//! ```toml
//! format = 1                      # rule file format; this build reads 1
//! ruleset = "builtin-2026.05"     # a label reported with every fingerprint
//!
//! [[rule]]
//! id = "sipvicious-svmap-py3"     # unique across all loaded files
//! tool = "sipvicious"
//! variant = "svmap"               # optional
//! version = "python3-era (v0.3.x, 2020+)"   # optional
//! category = "scanner"            # scanner | dual-use | benign
//! confidence = 0.8                # when every `require` holds
//! source_port_base = 5060         # optional: binds this port, counts upward when busy
//! tool_constants = ["1.1.1.1"]    # optional: addresses the tool hard-codes
//! require = [ { field = "via.branch", regex = '^z9hG4bK-[0-9]{1,10}$' } ]
//! require_any = [ ... ]           # at least one must hold
//! boost = [ { field = "user_agent", equals = "friendly-scanner", weight = 0.1 } ]
//! expect = [ ... ]                # the stock values: each miss is reported as a modification
//! reject = [ ... ]                # any hit rules the rule out
//! ```
//!
//! A condition names one `field` and exactly one operator: `equals` (string, integer, boolean,
//! or a list of header names), `nocase`, `prefix`, `suffix`, `contains`, `regex`, `one_of`,
//! `range = [lo, hi]`, `order` (header names, `?` suffix = optional), `present`, or `same_as`
//! (another field). Optional: `negate`, `weight` (boost/expect), `note` (shown in evidence).

use std::net::IpAddr;

use regex::bytes::Regex;
use serde::Deserialize;

use super::facts::{Facts, Field, Kind, Value};
use crate::escape::escape_bounded;
use crate::sip::{Header, HeaderName};

/// The rule file format this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// Conditions per section are tracked in a 64-bit mask.
const MAX_CONDITIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{origin}: not a valid rule file: {message}")]
    Syntax { origin: String, message: String },
    #[error(
        "{origin}: rule file format {found} is not supported (this build reads format {FORMAT_VERSION})"
    )]
    Format { origin: String, found: u32 },
    #[error("{origin}: rule {index} ({id:?}): {problem}")]
    Rule {
        origin: String,
        index: usize,
        id: String,
        problem: String,
    },
    #[error("{origin}: rule id {id:?} is already defined (in {first})")]
    Duplicate {
        origin: String,
        id: String,
        first: String,
    },
    // The I/O error is in the message, not a `source`, so that a cause chain does not print it
    // twice.
    #[error("cannot read rule file {path}: {error}")]
    Read { path: String, error: std::io::Error },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    id: String,
    tool: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    category: Option<String>,
    confidence: f64,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    source_port_base: Option<u16>,
    #[serde(default)]
    tool_constants: Vec<String>,
    #[serde(default)]
    require: Vec<CondToml>,
    #[serde(default)]
    require_any: Vec<CondToml>,
    #[serde(default)]
    boost: Vec<CondToml>,
    #[serde(default)]
    expect: Vec<CondToml>,
    #[serde(default)]
    reject: Vec<CondToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CondToml {
    field: String,
    #[serde(default)]
    equals: Option<toml::Value>,
    #[serde(default)]
    nocase: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    one_of: Option<Vec<String>>,
    #[serde(default)]
    range: Option<Vec<i64>>,
    #[serde(default)]
    order: Option<Vec<String>>,
    #[serde(default)]
    present: Option<bool>,
    #[serde(default)]
    same_as: Option<String>,
    #[serde(default)]
    negate: bool,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    note: Option<String>,
}

/// Who a tool is to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Scanner,
    /// Test and diagnostic tools also used to probe (SIPp, sipsak).
    DualUse,
    /// Real SIP infrastructure (keepalives, responses).
    Benign,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Scanner => "scanner",
            Category::DualUse => "dual-use",
            Category::Benign => "benign",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "scanner" => Some(Category::Scanner),
            "dual-use" => Some(Category::DualUse),
            "benign" => Some(Category::Benign),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Op {
    EqBytes(Vec<u8>),
    EqInt(u64),
    EqBool(bool),
    EqList(Vec<Vec<u8>>),
    NoCase(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Contains(Box<memchr::memmem::Finder<'static>>),
    Regex(Regex),
    OneOf(Vec<Vec<u8>>),
    Range(u64, u64),
    /// Header names in order; `true` = optional.
    Order(Vec<(OrderName, bool)>),
    Present(bool),
    SameAs(Field),
}

/// A header name in an order pattern, resolved at load time so that known names compare as
/// enum values.
#[derive(Debug)]
pub(crate) enum OrderName {
    Known(HeaderName),
    Raw(Vec<u8>),
}

impl OrderName {
    fn parse(name: &str, as_spelled: bool) -> Self {
        match HeaderName::lookup(name.as_bytes()) {
            (known, _) if !as_spelled && known != HeaderName::Other => OrderName::Known(known),
            _ => OrderName::Raw(name.as_bytes().to_vec()),
        }
    }

    fn matches(&self, h: &Header<'_>, as_spelled: bool) -> bool {
        match self {
            OrderName::Known(n) => h.name == *n,
            OrderName::Raw(raw) if as_spelled => h.raw_name.eq_ignore_ascii_case(raw),
            OrderName::Raw(raw) => {
                h.name == HeaderName::Other && h.raw_name.eq_ignore_ascii_case(raw)
            }
        }
    }
}

/// One compiled condition.
#[derive(Debug)]
pub struct Condition {
    pub field_name: String,
    pub(crate) field: Field,
    pub(crate) op: Op,
    pub negate: bool,
    pub weight: f64,
    pub note: Option<String>,
    /// Human-readable test, for evidence (`regex ^z9hG4bK-[0-9]+$`).
    pub describe: String,
    /// The test in full (not bounded like `describe`), with `not ` when negated: with the
    /// field, what makes two conditions the same predicate.
    pub(crate) identity: String,
    /// Index of this condition's predicate in the engine (conditions that test the same field
    /// the same way, in any rule, share one), set when the engine loads its rules.
    pub(crate) predicate: usize,
    /// The start of this condition's compact evidence item in an event, JSON-escaped once at
    /// load: `{"rule":ID,"field":FIELD,"section":SECTION,"value":`.
    pub(crate) json_evidence: String,
}

impl Condition {
    /// Relative cost, so that a rule fails on its cheapest condition first.
    pub(crate) fn cost(&self) -> u8 {
        match &self.op {
            Op::Regex(_) => 3,
            Op::Contains(_) => 2,
            Op::Order(_) | Op::EqList(_) => 1,
            _ => 0,
        }
    }

    /// Whether the condition holds for these facts.
    pub fn holds(&self, facts: &Facts<'_>) -> bool {
        self.test(facts) != self.negate
    }

    fn test(&self, facts: &Facts<'_>) -> bool {
        if let Op::Order(pattern) = &self.op {
            let as_spelled = self.field == Field::HeaderNames;
            // A message cut by the capture keeps only the first headers: they must follow the
            // pattern, the rest of it cannot be checked. The cut line itself is left out.
            let cut = facts.msg.truncated();
            let headers = facts
                .msg
                .headers()
                .filter(|h| !h.has(crate::sip::message::header_flags::PARTIAL));
            return order_matches(headers, pattern, as_spelled, cut);
        }
        if let Op::EqList(list) = &self.op {
            return facts
                .names(&self.field)
                .map(Some)
                .chain(std::iter::once(None))
                .zip(
                    list.iter()
                        .map(|v| Some(v.as_slice()))
                        .chain(std::iter::once(None)),
                )
                .all(|(a, b)| a == b);
        }
        let value = facts.get(&self.field);
        match &self.op {
            Op::SameAs(other) => value.same(&facts.get(other)),
            _ => self.test_value(value),
        }
    }

    /// Whether the condition holds for a message whose field is `value` (for a `same_as`
    /// condition, the other field's value is needed: false).
    pub(crate) fn holds_for(&self, value: Value<'_>) -> bool {
        self.test_value(value) != self.negate
    }

    fn test_value(&self, value: Value<'_>) -> bool {
        match (&self.op, value) {
            (Op::Present(want), v) => (v != Value::Missing) == *want,
            (Op::SameAs(_), _) => false,
            (_, Value::Missing) => false,
            (Op::EqBytes(want), Value::Bytes(b)) => b == want.as_slice(),
            (Op::EqInt(want), Value::Int(n)) => n == *want,
            (Op::EqBool(want), Value::Bool(b)) => b == *want,
            (Op::EqBytes(want), Value::Ip(ip)) => super::facts::parse_ip(want) == Some(ip),
            (Op::NoCase(want), Value::Bytes(b)) => b.eq_ignore_ascii_case(want),
            (Op::Prefix(p), Value::Bytes(b)) => b.starts_with(p),
            (Op::Suffix(s), Value::Bytes(b)) => b.ends_with(s),
            (Op::Contains(finder), Value::Bytes(b)) => finder.find(b).is_some(),
            (Op::Regex(re), Value::Bytes(b)) => re.is_match(b),
            (Op::OneOf(set), Value::Bytes(b)) => set.iter().any(|s| s == b),
            (Op::Range(lo, hi), Value::Int(n)) => (*lo..=*hi).contains(&n),
            _ => false,
        }
    }
}

fn order_matches<'a>(
    headers: impl Iterator<Item = Header<'a>>,
    pattern: &[(OrderName, bool)],
    as_spelled: bool,
    prefix_only: bool,
) -> bool {
    let mut p = 0;
    for h in headers {
        loop {
            let Some((want, optional)) = pattern.get(p) else {
                return false;
            };
            p += 1;
            if want.matches(&h, as_spelled) {
                break;
            }
            if !optional {
                return false;
            }
        }
    }
    prefix_only || pattern[p.min(pattern.len())..].iter().all(|(_, opt)| *opt)
}

/// A compiled rule. Its text fields (tool, variant, version, description, tags, and the
/// conditions' field names, tests and notes) are stored escaped: printable ASCII, bounded.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub tool: String,
    pub variant: Option<String>,
    pub version: Option<String>,
    pub category: Category,
    pub confidence: f64,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub source_port_base: Option<u16>,
    pub tool_constants: Vec<IpAddr>,
    pub require: Vec<Condition>,
    pub require_any: Vec<Condition>,
    pub boost: Vec<Condition>,
    pub expect: Vec<Condition>,
    pub reject: Vec<Condition>,
    /// The file it came from.
    pub origin: String,
    /// `require` indexes, cheapest first (evaluation order; evidence keeps file order).
    pub(crate) require_order: Vec<usize>,
    /// JSON written with every verdict naming the rule, escaped once at load:
    /// `{"tool":..,"variant":..,"version":..,"category":..` (the fingerprint object's start),
    /// `"ID"`, `,"tags":[..]` (empty without tags), `{"rule":ID,"tool":TOOL,"confidence":` (an
    /// alternative's start).
    pub(crate) json_head: String,
    pub(crate) json_id: String,
    pub(crate) json_tags: String,
    pub(crate) json_alternative: String,
}

impl Rule {
    /// Every condition of the rule, section by section.
    pub(crate) fn conditions(&self) -> impl Iterator<Item = &Condition> {
        self.require
            .iter()
            .chain(&self.require_any)
            .chain(&self.boost)
            .chain(&self.expect)
            .chain(&self.reject)
    }

    pub(crate) fn conditions_mut(&mut self) -> impl Iterator<Item = &mut Condition> {
        self.require
            .iter_mut()
            .chain(&mut self.require_any)
            .chain(&mut self.boost)
            .chain(&mut self.expect)
            .chain(&mut self.reject)
    }
}

/// A validated rule file.
pub struct RuleFile {
    pub ruleset: Option<String>,
    pub rules: Vec<Rule>,
}

impl RuleFile {
    /// Parses and validates a rule file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RuleFile, RuleError> {
        // Read the format first, so that a newer file fails on its version, not on a field
        // this build does not know.
        #[derive(Deserialize)]
        struct FormatOnly {
            format: Option<u32>,
        }
        let syntax = |e: toml::de::Error| RuleError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        };
        let format = toml::from_str::<FormatOnly>(text).map_err(syntax)?.format;
        match format {
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(RuleError::Format {
                    origin: origin.to_string(),
                    found,
                });
            }
            None => {
                return Err(RuleError::Syntax {
                    origin: origin.to_string(),
                    message: format!("missing `format = {FORMAT_VERSION}`"),
                });
            }
        }
        // Each rule is read on its own, so that a mistake in one (an unknown key, a wrong
        // type) is reported against that rule's index and id.
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let ruleset = match table.remove("ruleset") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => {
                return Err(RuleError::Syntax {
                    origin: origin.to_string(),
                    message: "`ruleset` must be a string".to_string(),
                });
            }
        };
        table.remove("format");
        let raw_rules = match table.remove("rule") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(_) => {
                return Err(RuleError::Syntax {
                    origin: origin.to_string(),
                    message: "`rule` must be an array of tables ([[rule]])".to_string(),
                });
            }
        };
        if let Some(key) = table.keys().next() {
            return Err(RuleError::Syntax {
                origin: origin.to_string(),
                message: format!("unknown top-level key `{key}` (expected format, ruleset, rule)"),
            });
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(raw_rules.len());
        for (index, value) in raw_rules.into_iter().enumerate() {
            let id = value
                .get("id")
                .and_then(toml::Value::as_str)
                .unwrap_or("(no id)")
                .to_string();
            let rule_error = |problem: String| RuleError::Rule {
                origin: origin.to_string(),
                index: index + 1,
                id: id.clone(),
                problem,
            };
            let raw: RuleToml = value
                .try_into()
                .map_err(|e: toml::de::Error| rule_error(e.message().to_string()))?;
            let rule = compile_rule(raw, origin).map_err(rule_error)?;
            if let Some(first) = rules.iter().find(|r| r.id == rule.id) {
                return Err(RuleError::Duplicate {
                    origin: origin.to_string(),
                    id: rule.id.clone(),
                    first: first.origin.clone(),
                });
            }
            rules.push(rule);
        }
        Ok(RuleFile { ruleset, rules })
    }
}

fn compile_rule(raw: RuleToml, origin: &str) -> Result<Rule, String> {
    if raw.id.is_empty()
        || !raw
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("`id` must be non-empty and made of letters, digits, '-', '_' or '.'".into());
    }
    if raw.tool.trim().is_empty() {
        return Err("`tool` must not be empty".into());
    }
    if !(0.0..=1.0).contains(&raw.confidence) {
        return Err(format!("`confidence` {} is outside 0..1", raw.confidence));
    }
    let category = match raw.category.as_deref() {
        None => Category::Scanner,
        Some(c) => Category::parse(c).ok_or_else(|| {
            format!("`category` {c:?} is not one of \"scanner\", \"dual-use\", \"benign\"")
        })?,
    };
    if raw.require.is_empty() && raw.require_any.is_empty() {
        return Err("a rule needs at least one `require` or `require_any` condition".into());
    }
    let mut tool_constants = Vec::new();
    for c in &raw.tool_constants {
        tool_constants.push(
            c.parse()
                .map_err(|_| format!("`tool_constants`: {c:?} is not an IP address"))?,
        );
    }
    let section =
        |name: &str, conds: Vec<CondToml>, weighted: bool| -> Result<Vec<Condition>, String> {
            if conds.len() > MAX_CONDITIONS {
                return Err(format!(
                    "`{name}` has {} conditions, at most {MAX_CONDITIONS}",
                    conds.len()
                ));
            }
            conds
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    compile_condition(c, weighted)
                        .map_err(|e| format!("`{name}` condition {}: {e}", i + 1))
                })
                .collect()
        };
    Ok(Rule {
        require: section("require", raw.require, false)?,
        require_any: section("require_any", raw.require_any, false)?,
        boost: section("boost", raw.boost, true)?,
        expect: section("expect", raw.expect, true)?,
        reject: section("reject", raw.reject, false)?,
        id: raw.id,
        tool: rule_text(&raw.tool),
        variant: raw.variant.as_deref().map(rule_text),
        version: raw.version.as_deref().map(rule_text),
        category,
        confidence: raw.confidence,
        description: raw.description.as_deref().map(rule_text),
        tags: raw.tags.iter().map(|t| rule_text(t)).collect(),
        source_port_base: raw.source_port_base,
        tool_constants,
        origin: origin.to_string(),
        require_order: Vec::new(),
        json_head: String::new(),
        json_id: String::new(),
        json_tags: String::new(),
        json_alternative: String::new(),
    })
    .map(|mut rule: Rule| {
        let mut order: Vec<usize> = (0..rule.require.len()).collect();
        order.sort_by_key(|&i| rule.require[i].cost());
        rule.require_order = order;
        rule.prepare_json();
        rule
    })
}

/// A string as JSON (quoted, escaped).
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

impl Rule {
    /// The JSON fragments events repeat (see the fields' documentation).
    fn prepare_json(&mut self) {
        let id = json_string(&self.id);
        let mut head = format!("{{\"tool\":{}", json_string(&self.tool));
        if let Some(v) = &self.variant {
            head.push_str(&format!(",\"variant\":{}", json_string(v)));
        }
        if let Some(v) = &self.version {
            head.push_str(&format!(",\"version\":{}", json_string(v)));
        }
        head.push_str(&format!(
            ",\"category\":{}",
            json_string(self.category.as_str())
        ));
        self.json_head = head;
        self.json_tags = if self.tags.is_empty() {
            String::new()
        } else {
            let tags: Vec<String> = self.tags.iter().map(|t| json_string(t)).collect();
            format!(",\"tags\":[{}]", tags.join(","))
        };
        self.json_alternative = format!(
            "{{\"rule\":{id},\"tool\":{},\"confidence\":",
            json_string(&self.tool)
        );
        for (section, conds) in [
            ("require", &mut self.require),
            ("require_any", &mut self.require_any),
            ("boost", &mut self.boost),
            ("expect", &mut self.expect),
            ("reject", &mut self.reject),
        ] {
            for c in conds {
                c.json_evidence = format!(
                    "{{\"rule\":{id},\"field\":{},\"section\":\"{section}\",\"value\":",
                    json_string(&c.field_name)
                );
            }
        }
        self.json_id = id;
    }
}

/// Longest rule text (notes, tests, names) carried into events.
const RULE_TEXT_MAX: usize = 512;

/// Rule text goes into every event that cites the rule: escaped once here, at load, so outputs
/// can use it as it is (terminal-safe, bounded) without escaping it per event.
fn rule_text(s: &str) -> String {
    escape_bounded(s.as_bytes(), RULE_TEXT_MAX)
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", inner.join(", "))
        }
        other => format!("{other:?}"),
    }
}

fn compile_condition(c: CondToml, weighted: bool) -> Result<Condition, String> {
    let field = Field::parse(&c.field).ok_or_else(|| {
        format!(
            "unknown field {:?}; known fields: {}",
            c.field,
            Field::known_names()
        )
    })?;
    let kind = field.kind();
    let weight = match (c.weight, weighted) {
        (Some(w), true) if (0.0..=1.0).contains(&w) => w,
        (Some(w), true) => return Err(format!("weight {w} is outside 0..1")),
        (None, true) => 0.0,
        (Some(_), false) => {
            return Err("`weight` only applies to `boost` and `expect` conditions".into());
        }
        (None, false) => 0.0,
    };
    let mut ops: Vec<(Op, String)> = Vec::new();
    let bytes_only = |op: &str| -> Result<(), String> {
        if kind == Kind::Bytes {
            Ok(())
        } else {
            Err(format!(
                "`{op}` needs a text field; {:?} is {kind:?}",
                c.field
            ))
        }
    };
    if let Some(v) = &c.equals {
        let op = match (v, kind) {
            (toml::Value::String(s), Kind::Bytes | Kind::Ip) => {
                if kind == Kind::Ip && super::facts::parse_ip(s.as_bytes()).is_none() {
                    return Err(format!("`equals` {s:?} is not an IP address"));
                }
                Op::EqBytes(s.as_bytes().to_vec())
            }
            (toml::Value::Integer(n), Kind::Int) => {
                Op::EqInt(u64::try_from(*n).map_err(|_| format!("`equals` {n} is negative"))?)
            }
            (toml::Value::Boolean(b), Kind::Bool) => Op::EqBool(*b),
            (toml::Value::Array(items), Kind::List) => Op::EqList(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(|s| s.as_bytes().to_vec())
                            .ok_or_else(|| "`equals` list items must be strings".to_string())
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (other, _) => {
                return Err(format!(
                    "`equals` value {} does not fit field {:?} ({kind:?})",
                    show(other),
                    c.field
                ));
            }
        };
        ops.push((op, format!("equals {}", show(v))));
    }
    let contains =
        |needle: Vec<u8>| Op::Contains(Box::new(memchr::memmem::Finder::new(&needle).into_owned()));
    for (name, val, make) in [
        (
            "nocase",
            &c.nocase,
            &(Op::NoCase as fn(Vec<u8>) -> Op) as &dyn Fn(Vec<u8>) -> Op,
        ),
        ("prefix", &c.prefix, &Op::Prefix),
        ("suffix", &c.suffix, &Op::Suffix),
        ("contains", &c.contains, &contains),
    ] {
        if let Some(s) = val {
            bytes_only(name)?;
            ops.push((make(s.as_bytes().to_vec()), format!("{name} {s:?}")));
        }
    }
    if let Some(re) = &c.regex {
        bytes_only("regex")?;
        let compiled = regex::bytes::RegexBuilder::new(re)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad regex {re:?}: {e}"))?;
        ops.push((Op::Regex(compiled), format!("regex {re}")));
    }
    if let Some(set) = &c.one_of {
        bytes_only("one_of")?;
        if set.is_empty() {
            return Err("`one_of` is empty".into());
        }
        ops.push((
            Op::OneOf(set.iter().map(|s| s.as_bytes().to_vec()).collect()),
            format!("one of {set:?}"),
        ));
    }
    if let Some(range) = &c.range {
        if kind != Kind::Int {
            return Err(format!(
                "`range` needs a numeric field; {:?} is {kind:?}",
                c.field
            ));
        }
        let [lo, hi] = range.as_slice() else {
            return Err("`range` must be [low, high]".into());
        };
        if lo < &0 || lo > hi {
            return Err(format!("`range` [{lo}, {hi}] is empty or negative"));
        }
        ops.push((Op::Range(*lo as u64, *hi as u64), format!("in {lo}..={hi}")));
    }
    if let Some(order) = &c.order {
        if kind != Kind::List {
            return Err(format!(
                "`order` needs header_order or header_names; {:?} is {kind:?}",
                c.field
            ));
        }
        let as_spelled = field == Field::HeaderNames;
        let pattern = order
            .iter()
            .map(|n| match n.strip_suffix('?') {
                Some(name) => (OrderName::parse(name, as_spelled), true),
                None => (OrderName::parse(n, as_spelled), false),
            })
            .collect();
        ops.push((Op::Order(pattern), format!("order {}", order.join(","))));
    }
    if let Some(p) = c.present {
        ops.push((
            Op::Present(p),
            if p { "present" } else { "absent" }.to_string(),
        ));
    }
    if let Some(other) = &c.same_as {
        let other_field =
            Field::parse(other).ok_or_else(|| format!("`same_as`: unknown field {other:?}"))?;
        if other_field.kind() == Kind::List || kind == Kind::List {
            return Err("`same_as` does not compare list fields".into());
        }
        ops.push((Op::SameAs(other_field), format!("same as {other}")));
    }
    if ops.len() != 1 {
        return Err(format!(
            "field {:?} needs exactly one operator (equals, nocase, prefix, suffix, contains, \
             regex, one_of, range, order, present, same_as); found {}",
            c.field,
            ops.len()
        ));
    }
    let (op, mut describe) = ops.pop().unwrap_or((Op::Present(true), String::new()));
    if kind == Kind::List && !matches!(op, Op::Order(_) | Op::EqList(_) | Op::Present(_)) {
        return Err(format!(
            "{:?} is a list of header names: use `order` or `equals` with a list",
            c.field
        ));
    }
    if c.negate {
        describe.insert_str(0, "not ");
    }
    Ok(Condition {
        field_name: rule_text(&c.field),
        field,
        op,
        negate: c.negate,
        weight,
        note: c.note.as_deref().map(rule_text),
        describe: rule_text(&describe),
        identity: describe,
        predicate: 0,
        json_evidence: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::SipMessage;

    fn err(text: &str) -> String {
        match RuleFile::parse(text, "test.toml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    const HEAD: &str = "format = 1\n";

    #[test]
    fn accepts_a_minimal_rule() {
        let f = RuleFile::parse(
            &format!(
                "{HEAD}ruleset = \"t\"\n[[rule]]\nid = \"a\"\ntool = \"x\"\nconfidence = 0.5\n\
                 require = [{{ field = \"user_agent\", equals = \"x\" }}]\n"
            ),
            "test.toml",
        )
        .unwrap();
        assert_eq!(f.ruleset.as_deref(), Some("t"));
        assert_eq!(f.rules[0].category, Category::Scanner);
        assert_eq!(f.rules[0].require[0].describe, "equals \"x\"");
    }

    #[test]
    fn validation_errors_name_the_rule_and_problem() {
        let rule = |body: &str| format!("{HEAD}[[rule]]\nid = \"bad-one\"\ntool = \"x\"\n{body}\n");
        let cases = [
            (
                rule("confidence = 2.0\nrequire = [{ field = \"method\", equals = \"A\" }]"),
                "confidence",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"nope\", equals = \"A\" }]"),
                "unknown field \"nope\"",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"method\", regex = \"(\" }]"),
                "bad regex",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"method\" }]"),
                "exactly one operator",
            ),
            (
                rule(
                    "confidence = 0.5\nrequire = [{ field = \"method\", equals = \"A\", prefix = \"B\" }]",
                ),
                "exactly one operator",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"ip.ttl\", regex = \"1\" }]"),
                "needs a text field",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"method\", equals = 3 }]"),
                "does not fit",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"method\", range = [1, 2] }]"),
                "numeric field",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"ip.ttl\", range = [9, 2] }]"),
                "empty",
            ),
            (
                rule(
                    "confidence = 0.5\nrequire = [{ field = \"header_order\", prefix = \"Via\" }]",
                ),
                "text field",
            ),
            (
                rule(
                    "confidence = 0.5\nrequire = [{ field = \"method\", equals = \"A\", weight = 0.1 }]",
                ),
                "weight",
            ),
            (
                rule(
                    "confidence = 0.5\nboost = [{ field = \"method\", equals = \"A\", weight = 0.1 }]",
                ),
                "at least one `require`",
            ),
            (
                rule(
                    "confidence = 0.5\ncategory = \"evil\"\nrequire = [{ field = \"method\", equals = \"A\" }]",
                ),
                "category",
            ),
            (
                rule(
                    "confidence = 0.5\ntool_constants = [\"x\"]\nrequire = [{ field = \"method\", equals = \"A\" }]",
                ),
                "not an IP",
            ),
            (
                rule(
                    "confidence = 0.5\nrequire = [{ field = \"method\", equals = \"A\", typo = 1 }]",
                ),
                "typo",
            ),
            (
                rule("confidence = 0.5\nrequire = [{ field = \"method\", same_as = \"bogus\" }]"),
                "same_as",
            ),
        ];
        for (text, needle) in cases {
            let e = err(&text);
            assert!(e.contains("bad-one"), "{e}");
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
            assert!(e.contains("test.toml"), "{e}");
        }
    }

    #[test]
    fn file_level_errors() {
        assert!(err("format = 2\n").contains("format 2 is not supported"));
        assert!(err("[[rule]]\n").contains("missing `format = 1`"));
        assert!(err("format = 1\nrule = 3").contains("array of tables"));
        assert!(err("format = 1\nrules = []").contains("unknown top-level key `rules`"));
        assert!(err("format = 1\n[[rule]]\ntool = \"x\"").contains("(no id)"));
        assert!(err("this is not toml").contains("not a valid rule file"));
        let dup = format!(
            "{HEAD}[[rule]]\nid = \"a\"\ntool = \"x\"\nconfidence = 0.5\nrequire = [{{ field = \"method\", equals = \"A\" }}]\n\
             [[rule]]\nid = \"a\"\ntool = \"y\"\nconfidence = 0.5\nrequire = [{{ field = \"method\", equals = \"B\" }}]\n"
        );
        assert!(err(&dup).contains("already defined"));
    }

    #[test]
    fn order_patterns() {
        let p = |s: &[&str]| -> Vec<(OrderName, bool)> {
            s.iter()
                .map(|n| match n.strip_suffix('?') {
                    Some(x) => (OrderName::parse(x, false), true),
                    None => (OrderName::parse(n, false), false),
                })
                .collect()
        };
        let msg = |names: &[&str]| {
            let mut text = String::from("OPTIONS sip:a SIP/2.0\r\n");
            for n in names {
                text.push_str(&format!("{n}: x\r\n"));
            }
            text.push_str("\r\n");
            text.into_bytes()
        };
        let holds = |names: &[&str], pat: &[(OrderName, bool)]| {
            let bytes = msg(names);
            let m = SipMessage::parse(&bytes);
            order_matches(m.headers(), pat, false, false)
        };
        let pat = p(&["Via", "To", "Contact?", "CSeq", "X-Auth?"]);
        assert!(holds(&["Via", "To", "Contact", "CSeq"], &pat));
        assert!(
            holds(&["v", "t", "m", "CSeq"], &pat),
            "compact forms are the same header"
        );
        assert!(holds(&["Via", "To", "CSeq"], &pat));
        assert!(holds(&["Via", "To", "CSeq", "x-auth"], &pat));
        assert!(!holds(&["Via", "CSeq"], &pat));
        assert!(!holds(&["Via", "To", "CSeq", "X"], &pat));
        assert!(!holds(&["To", "Via", "CSeq"], &pat));
        // An unknown name in a pattern does not match a known header spelled differently.
        assert!(!holds(&["Via", "To", "CSeq", "Authorization"], &pat));
        // A cut message: the headers that survived must follow the pattern, nothing more.
        let bytes = msg(&["Via", "To"]);
        let m = SipMessage::parse(&bytes);
        assert!(order_matches(m.headers(), &pat, false, true));
        assert!(!order_matches(m.headers(), &pat, false, false));
        let bytes = msg(&["To", "Via"]);
        let m = SipMessage::parse(&bytes);
        assert!(!order_matches(m.headers(), &pat, false, true));
    }
}
