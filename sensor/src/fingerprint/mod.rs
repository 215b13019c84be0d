//! Scanner fingerprinting: which tool sent a packet, with the evidence.
