fn main() {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .io_memory(64 << 10)
        .make()
        .unwrap();
    ex.run(async {});
    println!(
        "coop={} plain={}",
        shadowtee::ring::COOP_RINGS.load(std::sync::atomic::Ordering::Relaxed),
        shadowtee::ring::PLAIN_RINGS.load(std::sync::atomic::Ordering::Relaxed)
    );
}
