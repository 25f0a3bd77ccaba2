fn main() {
    println!("shadowtap: being built");
}
