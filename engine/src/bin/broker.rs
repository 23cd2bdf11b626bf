fn main() {
    eprintln!("broker: not implemented yet");
    std::process::exit(2);
}
