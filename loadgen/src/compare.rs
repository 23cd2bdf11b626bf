//! `loadgen compare BASE NEW…`: statistical comparison of result sets (regression gate).
