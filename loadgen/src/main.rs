fn main() {
    eprintln!("loadgen: not implemented yet");
    std::process::exit(2);
}
