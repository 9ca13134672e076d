//! Smoke: the real binary proxies a GET to a real upstream and mirrors it.
use shadowtee_e2e::*;
use std::time::Duration;

#[test]
fn get_is_proxied_and_mirrored() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[("test-v1", shadow.addr)]));
    let r = proxy.get("/hello?x=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("v1"));
    assert!(
        shadow.wait_for(1, Duration::from_secs(5)),
        "shadow got no copy"
    );
    let copy = &shadow.requests()[0];
    assert_eq!(copy.target, "/hello?x=1");
    assert_eq!(copy.header("x-shadowtee-mirror"), Some("1"));
    assert_eq!(proxy.stop(), Some(0));
}
