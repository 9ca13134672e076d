//! One test per validation rule (asserting the exact key path), the SPEC
//! example end to end, and the matcher / weight-table semantics.

use std::net::SocketAddr;
use std::time::Duration;

use crate::*;

const SPEC_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"      # one SO_REUSEPORT socket per core
cores = 2                      # executors, each pinned to a CPU; default: all CPUs
max_header_bytes = 65536       # request head larger -> 431
max_body_bytes = 0             # 0 = unlimited; larger request body -> 413
header_timeout_ms = 10000      # head not complete in time -> 408 and close
idle_timeout_ms = 60000        # keep-alive idle close
drain_timeout_ms = 10000       # on SIGTERM: time in-flight requests get to finish
max_connections = 10000        # per core; over it new connections get 503 and close

[log]
access = ""                    # "" off, "stdout", or a file path: one line per request

[admin]
listen = "127.0.0.1:9901"      # /metrics, /healthz, /compare

[mirror]
queue_capacity = 4096          # per core, bounded lock-free queue; full -> shed
max_inflight = 256             # per core per shadow upstream; over -> shed
max_body_bytes = 1048576       # a request whose body is larger is not mirrored (counted as shed)
timeout_ms = 1000              # shadow connect+response budget, separate from the route's; over -> failed
host_suffix = ""               # e.g. "-shadow": inserted before any port, Host "a.b:8080" -> "a.b-shadow:8080" (Envoy's rule)
marker_header = "x-shadowtee-mirror"  # set to "1" on every copy; a request that arrives
                               # carrying it is never mirrored again (loop guard); "" disables

[[upstreams]]
name = "v1"
endpoints = ["127.0.0.1:3001"] # host:port; several = balanced
connect_timeout_ms = 1000
request_timeout_ms = 15000     # no response head in time -> 504
max_idle_per_core = 64         # keep-alive pool

[[upstreams]]
name = "test-v1"
endpoints = ["127.0.0.1:3002"]

[[routes]]                     # first match wins; no match -> 404
name = "default"
[routes.match]                 # every key optional; empty = match all
path_prefix = "/"              # or path_exact = "/hello"
methods = ["GET", "POST"]
headers = { "x-canary" = "1" } # exact value match, names case-insensitive
[[routes.destinations]]        # weighted primary, like Istio route weights
upstream = "v1"
weight = 100
[[routes.mirrors]]             # zero or more shadows, like Istio mirrors
upstream = "test-v1"
percent = 100.0                # 0..=100, fraction of matching requests copied (absent = 100)
# optional:
# methods = ["GET", "HEAD"]    # only these methods are copied (default: all)
# sample_key = "header:x-user-id"  # sticky sampling: hash of this header decides, not chance
# max_rps = 500                # per core; over it the copy is shed
# set_headers = { "x-env" = "shadow" }      # only on the copy
# remove_headers = ["authorization", "cookie"]  # only on the copy
# compare_body = false         # also compare digests of primary and shadow response bodies
"#;

/// Server, two upstreams; tests append routes or override sections.
const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[upstreams]]
name = "v1"
endpoints = ["127.0.0.1:3001"]

[[upstreams]]
name = "v2"
endpoints = ["127.0.0.1:3002"]
"#;

fn errors(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_err(text: &str, path: &str, needle: &str) {
    let e = errors(text);
    assert!(
        e.0.iter()
            .any(|x| x.path == path && x.message.contains(needle)),
        "no error at {path:?} containing {needle:?}; got:\n{e}"
    );
}

fn with_route(route: &str) -> String {
    format!("{BASE}\n{route}")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---- SPEC example and defaults ----

#[test]
fn spec_example_parses_with_every_value() {
    let c = parse(SPEC_EXAMPLE).unwrap();
    assert_eq!(c.server.listen, addr("127.0.0.1:8080"));
    assert_eq!(c.server.cores.map(|n| n.get()), Some(2));
    assert_eq!(c.server.max_header_bytes, 65536);
    assert_eq!(c.server.max_body_bytes, None);
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_connections, 10000);
    assert_eq!(c.log.access, AccessLog::Off);
    assert!(c.admin.explicit);
    assert_eq!(
        c.mirror.marker_header.as_deref(),
        Some("x-shadowtee-mirror")
    );
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.upstream_index("test-v1"), Some(1));
    let r = &c.routes[0];
    assert_eq!(r.name, "default");
    assert_eq!(r.matcher.path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(
        r.matcher.methods,
        Some(vec!["GET".to_string(), "POST".to_string()])
    );
    assert_eq!(r.matcher.headers, vec![("x-canary".into(), "1".into())]);
    assert_eq!(
        r.destinations,
        vec![Destination {
            upstream: 0,
            weight: 100
        }]
    );
    assert_eq!(r.weights.total(), 100);
    assert_eq!(r.mirrors.len(), 1);
    assert_eq!(r.mirrors[0].upstream, 1);
    assert_eq!(r.mirrors[0].percent, 100.0);
    assert!(!r.mirrors[0].compare_body);

    let s = c.summary();
    for needle in [
        "127.0.0.1:8080",
        "cores: 2",
        "v1: 127.0.0.1:3001",
        "test-v1: 127.0.0.1:3002",
        "default: path prefix / and method in GET|POST and x-canary: 1",
        "-> v1 weight 100 (100.0%)",
        "mirror test-v1 100%",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
}

#[test]
fn to_json_round_trips_through_toml() {
    let c = parse(SPEC_EXAMPLE).unwrap();
    let j = c.to_json();
    assert_eq!(j["server"]["max_body_bytes"], 0);
    assert_eq!(j["server"]["header_timeout_ms"], 10000);
    assert_eq!(j["mirror"]["marker_header"], "x-shadowtee-mirror");
    assert_eq!(j["routes"][0]["destinations"][0]["upstream"], "v1");
    assert_eq!(j["routes"][0]["mirrors"][0]["upstream"], "test-v1");
    assert_eq!(j["routes"][0]["match"]["headers"]["x-canary"], "1");
    let text = toml::to_string(&j).unwrap();
    let again = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, c);
}

#[test]
fn defaults_match_spec() {
    let c = parse("[server]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    assert_eq!(c.server.cores, None);
    assert_eq!(c.server.max_header_bytes, 65536);
    assert_eq!(c.server.max_body_bytes, None);
    assert_eq!(c.server.header_timeout, Duration::from_millis(10000));
    assert_eq!(c.server.idle_timeout, Duration::from_millis(60000));
    assert_eq!(c.server.drain_timeout, Duration::from_millis(10000));
    assert_eq!(c.server.max_connections, 10000);
    assert_eq!(c.log.access, AccessLog::Off);
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    assert!(!c.admin.explicit);
    assert_eq!(c.mirror.queue_capacity, 4096);
    assert_eq!(c.mirror.max_inflight, 256);
    assert_eq!(c.mirror.max_body_bytes, 1048576);
    assert_eq!(c.mirror.timeout, Duration::from_millis(1000));
    assert_eq!(c.mirror.host_suffix, "");
    assert_eq!(
        c.mirror.marker_header.as_deref(),
        Some("x-shadowtee-mirror")
    );
    assert!(c.upstreams.is_empty());
    assert!(c.routes.is_empty());
    assert!(c.summary().contains("every request gets 404"));

    let c = parse(&with_route(
        "[[routes]]\n[[routes.destinations]]\nupstream = \"v2\"\n[[routes.mirrors]]\nupstream = \"v1\"\n",
    ))
    .unwrap();
    let u = &c.upstreams[0];
    assert_eq!(u.connect_timeout, Duration::from_millis(1000));
    assert_eq!(u.request_timeout, Duration::from_millis(15000));
    assert_eq!(u.max_idle_per_core, 64);
    let r = &c.routes[0];
    assert_eq!(r.name, "route0");
    assert_eq!(r.matcher, Match::default());
    assert_eq!(r.destinations[0].weight, 100);
    assert_eq!(r.mirrors[0].percent, 100.0);
    assert_eq!(r.mirrors[0].methods, None);
    assert!(r.mirrors[0].set_headers.is_empty());
}

#[test]
fn optional_values_are_carried() {
    let c = parse(&format!(
        r#"{BASE}
[log]
access = "stdout"
[mirror]
host_suffix = "-shadow"
marker_header = ""
[[routes]]
name = "api"
match = {{ path_exact = "/hello", methods = ["get", "Post", "GET"] }}
destinations = [{{ upstream = "v1", weight = 3 }}, {{ upstream = "v2", weight = 0 }}]
[[routes.mirrors]]
upstream = "v2"
percent = 12
methods = ["head"]
sample_key = "header:X-User-Id"
max_rps = 500
set_headers = {{ "X-Env" = "shadow" }}
remove_headers = ["Authorization", "cookie"]
compare_body = true
"#
    ))
    .unwrap();
    assert_eq!(c.log.access, AccessLog::Stdout);
    assert_eq!(c.mirror.host_suffix, "-shadow");
    assert_eq!(c.mirror.marker_header, None);
    let r = &c.routes[0];
    assert_eq!(r.matcher.path, Some(PathMatch::Exact("/hello".into())));
    assert_eq!(
        r.matcher.methods,
        Some(vec!["GET".to_string(), "POST".to_string()])
    );
    let m = &r.mirrors[0];
    assert_eq!(m.percent, 12.0);
    assert_eq!(m.methods, Some(vec!["HEAD".to_string()]));
    assert!(m.copies_method(b"HEAD") && !m.copies_method(b"GET"));
    assert_eq!(m.sample_key, Some(SampleKey::Header("x-user-id".into())));
    assert_eq!(m.max_rps, Some(500));
    assert_eq!(m.set_headers, vec![("x-env".into(), "shadow".into())]);
    assert_eq!(m.remove_headers, vec!["authorization", "cookie"]);
    assert!(m.compare_body);
    let mut c2 = parse(&toml::to_string(&c.to_json()).unwrap()).unwrap();
    // to_json always writes [admin]; only `explicit` may differ.
    assert!(c2.admin.explicit);
    c2.admin.explicit = c.admin.explicit;
    assert_eq!(c2, c);

    let c =
        parse("[server]\nlisten = \"127.0.0.1:1\"\n[log]\naccess = \"/var/log/st.log\"\n").unwrap();
    assert_eq!(c.log.access, AccessLog::File("/var/log/st.log".into()));
}

#[test]
fn endpoint_host_names_resolve() {
    let c = parse(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[[upstreams]]\nname = \"a\"\nendpoints = [\"localhost:3001\", \"127.0.0.1:3002\"]\n",
    )
    .unwrap();
    assert_eq!(c.upstreams[0].endpoints.len(), 2);
    assert_eq!(c.upstreams[0].endpoints[0].port(), 3001);
    assert!(c.upstreams[0].endpoints[0].ip().is_loopback());
}

// ---- syntax, unknown keys, types ----

#[test]
fn syntax_error_is_one_error_with_line_and_column() {
    let e = errors("[server]\nlisten = \"127.0.0.1:8080\"\ncores = = 2\n");
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].path, "");
    assert!(e.0[0].message.contains("line 3"), "{e}");
    assert!(e.0[0].message.contains("column"), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn every_unknown_key_is_reported() {
    let text = format!(
        r#"extra = 1
{BASE}
[admin]
lisen = "x"
[mirror]
queue = 1
[log]
acces = ""
[[routes]]
nam = "x"
[routes.match]
path = "/"
[[routes.destinations]]
upstream = "v1"
wieght = 1
[[routes.mirrors]]
upstream = "v2"
percentage = 1
"#
    )
    .replace("[server]\n", "[server]\nlisen = 1\n");
    let e = errors(&text);
    for p in [
        "extra",
        "server.lisen",
        "admin.lisen",
        "mirror.queue",
        "log.acces",
        "routes[0].nam",
        "routes[0].match.path",
        "routes[0].destinations[0].wieght",
        "routes[0].mirrors[0].percentage",
    ] {
        assert!(
            e.0.iter()
                .any(|x| x.path == p && x.message == "unknown key"),
            "missing unknown key {p}:\n{e}"
        );
    }
    assert_err(
        &BASE.replace("name = \"v2\"", "name = \"v2\"\nport = 1"),
        "upstreams[1].port",
        "unknown key",
    );
}

#[test]
fn type_errors_name_the_key() {
    assert_err(
        &BASE.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\ncores = \"2\"",
        ),
        "server.cores",
        "expected an integer, found a string",
    );
    assert_err(
        &format!("{BASE}\n[mirror]\ntimeout_ms = 1.5\n"),
        "mirror.timeout_ms",
        "expected an integer",
    );
    assert_err(&format!("log = 3\n{BASE}"), "log", "expected a table");
    assert_err(
        &BASE.replace("[\"127.0.0.1:3002\"]", "[\"127.0.0.1:3002\", 7]"),
        "upstreams[1].endpoints[1]",
        "expected a string",
    );
    assert_err(
        &with_route("[[routes]]\nmatch = { headers = { \"x-a\" = 1 } }\ndestinations = [{ upstream = \"v1\" }]"),
        "routes[0].match.headers.x-a",
        "expected a string",
    );
}

// ---- server ----

#[test]
fn server_listen_is_required() {
    assert_err("", "server.listen", "required");
    assert_err("[server]\ncores = 1\n", "server.listen", "required");
    assert_err(
        "[server]\nlisten = \"nope\"\n",
        "server.listen",
        "host:port",
    );
}

#[test]
fn server_limits() {
    let srv = |extra: &str| format!("[server]\nlisten = \"127.0.0.1:1\"\n{extra}\n");
    assert_err(&srv("cores = 0"), "server.cores", "at least 1");
    assert_err(
        &srv("max_header_bytes = 1023"),
        "server.max_header_bytes",
        "at least 1024",
    );
    assert_err(
        &srv("header_timeout_ms = 0"),
        "server.header_timeout_ms",
        "at least 1",
    );
    assert_err(
        &srv("idle_timeout_ms = 0"),
        "server.idle_timeout_ms",
        "at least 1",
    );
    assert_err(
        &srv("drain_timeout_ms = -5"),
        "server.drain_timeout_ms",
        "at least 1",
    );
    assert_err(
        &srv("max_connections = 0"),
        "server.max_connections",
        "at least 1",
    );
    assert_err(
        &srv("max_body_bytes = -1"),
        "server.max_body_bytes",
        "at least 0",
    );
    let c = parse(&srv("max_body_bytes = 10")).unwrap();
    assert_eq!(c.server.max_body_bytes, Some(10));
}

#[test]
fn admin_listen_must_be_an_address() {
    assert_err(
        &format!("{BASE}\n[admin]\nlisten = \"127.0.0.1\"\n"),
        "admin.listen",
        "host:port",
    );
}

// ---- log, mirror settings ----

#[test]
fn log_access_must_be_a_string() {
    assert_err(
        &format!("{BASE}\n[log]\naccess = true\n"),
        "log.access",
        "expected a string",
    );
}

#[test]
fn mirror_settings_limits() {
    let m = |extra: &str| format!("{BASE}\n[mirror]\n{extra}\n");
    assert_err(
        &m("queue_capacity = 0"),
        "mirror.queue_capacity",
        "at least 1",
    );
    assert_err(&m("max_inflight = 0"), "mirror.max_inflight", "at least 1");
    assert_err(
        &m("pipeline_depth = 0"),
        "mirror.pipeline_depth",
        "at least 1",
    );
    assert_err(
        &m("pipeline_depth = 65"),
        "mirror.pipeline_depth",
        "at most 64",
    );
    assert_err(&m("timeout_ms = 0"), "mirror.timeout_ms", "at least 1");
    assert_err(
        &m("host_suffix = \"-sh adow\""),
        "mirror.host_suffix",
        "whitespace",
    );
    assert_err(&m("host_suffix = \"a/b\""), "mirror.host_suffix", "'/'");
    assert_err(&m("host_suffix = \":81\""), "mirror.host_suffix", "':'");
    assert_err(
        &m("marker_header = \"x mirror\""),
        "mirror.marker_header",
        "token",
    );
    let c = parse(&m("marker_header = \"X-Mirrored\"\nmax_body_bytes = 0")).unwrap();
    assert_eq!(c.mirror.marker_header.as_deref(), Some("x-mirrored"));
    assert_eq!(c.mirror.max_body_bytes, 0);
}

// ---- upstreams ----

#[test]
fn upstream_names_required_valid_and_unique() {
    assert_err(
        &BASE.replace("name = \"v2\"", "name = \"v1\""),
        "upstreams[1].name",
        "duplicate upstream name \"v1\"",
    );
    assert_err(
        &BASE.replace("name = \"v2\"\n", ""),
        "upstreams[1].name",
        "required",
    );
    assert_err(
        &BASE.replace("name = \"v2\"", "name = \"a/b\""),
        "upstreams[1].name",
        "only letters",
    );
}

#[test]
fn upstream_endpoints() {
    assert_err(
        &BASE.replace("[\"127.0.0.1:3002\"]", "[]"),
        "upstreams[1].endpoints",
        "at least one",
    );
    assert_err(
        &BASE.replace("endpoints = [\"127.0.0.1:3002\"]\n", ""),
        "upstreams[1].endpoints",
        "required",
    );
    assert_err(
        &BASE.replace(
            "[\"127.0.0.1:3002\"]",
            "[\"127.0.0.1:3002\", \"no-such-host.invalid:80\"]",
        ),
        "upstreams[1].endpoints[1]",
        "cannot resolve",
    );
    assert_err(
        &BASE.replace(
            "[\"127.0.0.1:3002\"]",
            "[\"127.0.0.1:3002\", \"127.0.0.1\"]",
        ),
        "upstreams[1].endpoints[1]",
        "host:port",
    );
    assert_err(
        &BASE.replace(
            "[\"127.0.0.1:3002\"]",
            "[\"127.0.0.1:3002\", \"127.0.0.1:3002\"]",
        ),
        "upstreams[1].endpoints[1]",
        "duplicate",
    );
    assert_err(
        &BASE.replace("127.0.0.1:3002", "127.0.0.1:0"),
        "upstreams[1].endpoints[0]",
        "port 0",
    );
}

#[test]
fn upstream_timeouts() {
    assert_err(
        &BASE.replace("name = \"v2\"", "name = \"v2\"\nconnect_timeout_ms = 0"),
        "upstreams[1].connect_timeout_ms",
        "at least 1",
    );
    assert_err(
        &BASE.replace("name = \"v2\"", "name = \"v2\"\nrequest_timeout_ms = 0"),
        "upstreams[1].request_timeout_ms",
        "at least 1",
    );
    assert_err(
        &BASE.replace("name = \"v2\"", "name = \"v2\"\nmax_idle_per_core = -1"),
        "upstreams[1].max_idle_per_core",
        "at least 0",
    );
}

// ---- routes ----

#[test]
fn route_names_unique_with_default_names() {
    let dest = "[[routes.destinations]]\nupstream = \"v1\"\n";
    assert_err(
        &with_route(&format!(
            "[[routes]]\nname = \"a\"\n{dest}[[routes]]\nname = \"a\"\n{dest}"
        )),
        "routes[1].name",
        "duplicate route name \"a\"",
    );
    // An explicit name may collide with a default one.
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{dest}[[routes]]\nname = \"route0\"\n{dest}"
        )),
        "routes[1].name",
        "duplicate route name \"route0\"",
    );
    assert_err(
        &with_route(&format!("[[routes]]\nname = \"a b\"\n{dest}")),
        "routes[0].name",
        "only letters",
    );
}

#[test]
fn destination_upstream_must_exist() {
    let e = errors(&with_route(
        "[[routes]]\n[[routes.destinations]]\nupstream = \"v1\"\nweight = 1\n[[routes]]\n[[routes.destinations]]\nupstream = \"v3\"\n",
    ));
    assert!(
        e.to_string()
            .contains("routes[1].destinations[0].upstream: no upstream named \"v3\""),
        "{e}"
    );
    // Zero upstreams but routes referencing them: still an error.
    assert_err(
        "[server]\nlisten = \"127.0.0.1:1\"\n[[routes]]\ndestinations = [{ upstream = \"v1\" }]\n",
        "routes[0].destinations[0].upstream",
        "no upstream named \"v1\"",
    );
    assert_err(
        &with_route("[[routes]]\ndestinations = [{ weight = 1 }]"),
        "routes[0].destinations[0].upstream",
        "required",
    );
}

#[test]
fn at_least_one_destination() {
    assert_err(
        &with_route("[[routes]]\nname = \"a\"\n"),
        "routes[0].destinations",
        "at least one",
    );
    assert_err(
        &with_route("[[routes]]\ndestinations = []\n"),
        "routes[0].destinations",
        "at least one",
    );
}

#[test]
fn weights_rules() {
    assert_err(
        &with_route(
            "[[routes]]\ndestinations = [{ upstream = \"v1\" }, { upstream = \"v2\", weight = 1 }]",
        ),
        "routes[0].destinations[0].weight",
        "weight required when a route has several destinations",
    );
    assert_err(
        &with_route("[[routes]]\ndestinations = [{ upstream = \"v1\", weight = -1 }]"),
        "routes[0].destinations[0].weight",
        "at least 0",
    );
    assert_err(
        &with_route("[[routes]]\ndestinations = [{ upstream = \"v1\", weight = 1.5 }]"),
        "routes[0].destinations[0].weight",
        "expected an integer",
    );
    assert_err(
        &with_route("[[routes]]\ndestinations = [{ upstream = \"v1\", weight = 0 }, { upstream = \"v2\", weight = 0 }]"),
        "routes[0].destinations",
        "positive sum",
    );
    assert_err(
        &with_route("[[routes]]\ndestinations = [{ upstream = \"v1\", weight = 4294967295 }, { upstream = \"v2\", weight = 1 }]"),
        "routes[0].destinations",
        "weights sum to 4294967296",
    );
    let c = parse(&with_route(
        "[[routes]]\ndestinations = [{ upstream = \"v1\", weight = 80 }, { upstream = \"v2\", weight = 20 }]",
    ))
    .unwrap();
    assert_eq!(c.routes[0].weights.total(), 100);
}

#[test]
fn path_rules() {
    let d = "destinations = [{ upstream = \"v1\" }]";
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\npath_exact = \"/a\"\npath_prefix = \"/\"\n"
        )),
        "routes[0].match.path_exact",
        "mutually exclusive",
    );
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\npath_exact = \"hello\"\n"
        )),
        "routes[0].match.path_exact",
        "start with '/'",
    );
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\npath_prefix = \"api\"\n"
        )),
        "routes[0].match.path_prefix",
        "start with '/'",
    );
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\npath_exact = \"/a?b=1\"\n"
        )),
        "routes[0].match.path_exact",
        "without the query",
    );
}

#[test]
fn method_rules() {
    let d = "destinations = [{ upstream = \"v1\" }]";
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\nmethods = [\"GET\", \"BAD METHOD\"]\n"
        )),
        "routes[0].match.methods[1]",
        "not a valid HTTP method",
    );
    assert_err(
        &with_route(&format!("[[routes]]\n{d}\n[routes.match]\nmethods = []\n")),
        "routes[0].match.methods",
        "must not be empty",
    );
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[[routes.mirrors]]\nupstream = \"v2\"\nmethods = [\"\"]\n"
        )),
        "routes[0].mirrors[0].methods[0]",
        "not a valid HTTP method",
    );
}

#[test]
fn match_header_rules() {
    let d = "destinations = [{ upstream = \"v1\" }]";
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\nheaders = {{ \"x canary\" = \"1\" }}\n"
        )),
        "routes[0].match.headers.\"x canary\"",
        "not a valid header name",
    );
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\nheaders = {{ \"x-a\" = \"1\\r\\nx: y\" }}\n"
        )),
        "routes[0].match.headers.x-a",
        "CR, LF, NUL",
    );
    assert_err(
        &with_route(&format!(
            "[[routes]]\n{d}\n[routes.match]\nheaders = {{ \"X-A\" = \"1\", \"x-a\" = \"2\" }}\n"
        )),
        "routes[0].match.headers.x-a",
        "listed twice",
    );
}

// ---- mirrors ----

fn mirror(extra: &str) -> String {
    with_route(&format!(
        "[[routes]]\ndestinations = [{{ upstream = \"v1\" }}]\n[[routes.mirrors]]\nupstream = \"v2\"\n{extra}\n"
    ))
}

#[test]
fn mirror_upstream_must_exist_and_be_unique() {
    assert_err(
        &with_route(
            "[[routes]]\ndestinations = [{ upstream = \"v1\" }]\nmirrors = [{ upstream = \"v3\" }]",
        ),
        "routes[0].mirrors[0].upstream",
        "no upstream named \"v3\"",
    );
    assert_err(
        &mirror("[[routes.mirrors]]\nupstream = \"v2\""),
        "routes[0].mirrors[1].upstream",
        "already mirrored",
    );
}

#[test]
fn mirror_percent_rules() {
    assert_err(
        &mirror("percent = 100.5"),
        "routes[0].mirrors[0].percent",
        "0..=100",
    );
    assert_err(
        &mirror("percent = -1"),
        "routes[0].mirrors[0].percent",
        "0..=100",
    );
    assert_err(
        &mirror("percent = nan"),
        "routes[0].mirrors[0].percent",
        "0..=100",
    );
    assert_err(
        &mirror("percent = inf"),
        "routes[0].mirrors[0].percent",
        "0..=100",
    );
    assert_err(
        &mirror("percent = \"5\""),
        "routes[0].mirrors[0].percent",
        "expected a number",
    );
    assert_eq!(
        parse(&mirror("percent = 0")).unwrap().routes[0].mirrors[0].percent,
        0.0
    );
}

#[test]
fn mirror_max_rps_positive() {
    assert_err(
        &mirror("max_rps = 0"),
        "routes[0].mirrors[0].max_rps",
        "at least 1",
    );
}

#[test]
fn mirror_sample_key_form() {
    assert_err(
        &mirror("sample_key = \"x-user-id\""),
        "routes[0].mirrors[0].sample_key",
        "header:NAME",
    );
    assert_err(
        &mirror("sample_key = \"header:\""),
        "routes[0].mirrors[0].sample_key",
        "not a valid header name",
    );
    assert_err(
        &mirror("sample_key = \"cookie:a\""),
        "routes[0].mirrors[0].sample_key",
        "header:NAME",
    );
}

#[test]
fn mirror_header_edit_rules() {
    assert_err(
        &mirror("set_headers = { \"bad name\" = \"x\" }"),
        "routes[0].mirrors[0].set_headers.\"bad name\"",
        "not a valid header name",
    );
    assert_err(
        &mirror("set_headers = { \"x-a\" = \"a\\nb\" }"),
        "routes[0].mirrors[0].set_headers.x-a",
        "CR, LF, NUL",
    );
    assert_err(
        &mirror("set_headers = { \"x-a\" = \"a\\u0000b\" }"),
        "routes[0].mirrors[0].set_headers.x-a",
        "CR, LF, NUL",
    );
    assert_err(
        &mirror("set_headers = { \"Content-Length\" = \"1\" }"),
        "routes[0].mirrors[0].set_headers.Content-Length",
        "framing",
    );
    assert_err(
        &mirror("set_headers = { \"connection\" = \"close\" }"),
        "routes[0].mirrors[0].set_headers.connection",
        "hop-by-hop",
    );
    assert_err(
        &mirror("set_headers = { \"x-shadowtee-mirror\" = \"0\" }"),
        "routes[0].mirrors[0].set_headers.x-shadowtee-mirror",
        "loop-guard",
    );
    assert_err(
        &mirror("remove_headers = [\"host\"]"),
        "routes[0].mirrors[0].remove_headers[0]",
        "Host",
    );
    assert_err(
        &mirror("remove_headers = [\"ok\", \"a:b\"]"),
        "routes[0].mirrors[0].remove_headers[1]",
        "not a valid header name",
    );
    assert_err(
        &mirror("set_headers = { \"x-a\" = \"1\" }\nremove_headers = [\"X-A\"]"),
        "routes[0].mirrors[0].remove_headers[0]",
        "both set and removed",
    );
    assert_err(
        &mirror("compare_body = 1"),
        "routes[0].mirrors[0].compare_body",
        "expected a boolean",
    );
}

#[test]
fn all_errors_are_collected_at_once() {
    let e = errors(
        "[server]\ncores = 0\n[mirror]\nqueue_capacity = 0\n[[upstreams]]\nname = \"a\"\nendpoints = []\n[[routes]]\ndestinations = [{ upstream = \"zz\" }]\n",
    );
    for p in [
        "server.listen",
        "server.cores",
        "mirror.queue_capacity",
        "upstreams[0].endpoints",
        "routes[0].destinations[0].upstream",
    ] {
        assert!(e.has_path(p), "missing {p}:\n{e}");
    }
    assert_eq!(e.to_string().lines().count(), e.0.len());
}

#[test]
fn load_reports_unreadable_file_by_name() {
    let e = load(std::path::Path::new("/nonexistent/shadowtee.toml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].path, "/nonexistent/shadowtee.toml");
}

// ---- WeightTable ----

#[test]
fn weight_table_distribution_is_exact() {
    let t = WeightTable::new(&[3, 0, 5, 2, 0]).unwrap();
    assert_eq!(t.total(), 10);
    let mut counts = [0u32; 5];
    for r in 0..t.total() {
        counts[t.pick(r)] += 1;
    }
    assert_eq!(counts, [3, 0, 5, 2, 0]);
    // Boundaries.
    assert_eq!(t.pick(0), 0);
    assert_eq!(t.pick(2), 0);
    assert_eq!(t.pick(3), 2);
    assert_eq!(t.pick(7), 2);
    assert_eq!(t.pick(8), 3);
    assert_eq!(t.pick(9), 3);
}

#[test]
fn weight_table_zero_weight_never_chosen() {
    let t = WeightTable::new(&[0, 0, 1, 0]).unwrap();
    assert_eq!(t.pick(0), 2);
    let t = WeightTable::new(&[0, 7]).unwrap();
    assert!((0..7).all(|r| t.pick(r) == 1));
    assert!(WeightTable::new(&[0, 0]).is_none());
    assert!(WeightTable::new(&[]).is_none());
    assert!(WeightTable::new(&[u32::MAX, 1]).is_none());
}

// ---- Match ----

fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&[u8]) -> Option<&'a [u8]> + 'a {
    move |name: &[u8]| {
        list.iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| v.as_bytes())
    }
}

#[test]
fn match_path_without_query() {
    let m = parse(&with_route(
        "[[routes]]\nmatch = { path_exact = \"/hello\" }\ndestinations = [{ upstream = \"v1\" }]",
    ))
    .unwrap()
    .routes[0]
        .matcher
        .clone();
    assert!(m.matches(b"GET", b"/hello", hdrs(&[])));
    assert!(!m.matches(b"GET", b"/hello/", hdrs(&[])));
    assert!(!m.matches(b"GET", b"/hell", hdrs(&[])));
    let p = Match {
        path: Some(PathMatch::Prefix("/api".into())),
        ..Match::default()
    };
    assert!(p.matches(b"GET", b"/api", hdrs(&[])));
    assert!(p.matches(b"GET", b"/api/v1", hdrs(&[])));
    assert!(!p.matches(b"GET", b"/ap", hdrs(&[])));
    assert!(Match::default().matches(b"DELETE", b"/anything", hdrs(&[])));
}

#[test]
fn match_methods_and_headers() {
    let c = parse(&with_route(
        "[[routes]]\nmatch = { methods = [\"get\", \"POST\"], headers = { \"X-Canary\" = \"1\" } }\ndestinations = [{ upstream = \"v1\" }]",
    ))
    .unwrap();
    let m = &c.routes[0].matcher;
    assert_eq!(m.headers, vec![("x-canary".to_string(), "1".to_string())]);
    let canary = [("x-canary", "1")];
    assert!(m.matches(b"GET", b"/", hdrs(&canary)));
    assert!(m.matches(b"POST", b"/x", hdrs(&canary)));
    assert!(!m.matches(b"PUT", b"/", hdrs(&canary)));
    // Methods are case-sensitive tokens (RFC 9110 9.1).
    assert!(!m.matches(b"get", b"/", hdrs(&canary)));
    assert!(!m.matches(b"GET", b"/", hdrs(&[("x-canary", "2")])));
    assert!(!m.matches(b"GET", b"/", hdrs(&[])));
}
