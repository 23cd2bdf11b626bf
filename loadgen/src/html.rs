//! placeholder
pub fn report_files(_f: &[std::path::PathBuf], _o: &std::path::Path) -> Result<(), String> { Err("todo".into()) }
