"""Mediated network, attacked from inside real containers against a real broker.

Test servers run on the host's loopback (plain HTTP, and HTTPS with a throwaway CA the
broker trusts); grants name them explicitly (127.0.0.1, or "secure.test", which the
operator pins to 127.0.0.1). Every refusal is asserted with its status, its message and
its audit record, and, where it matters, with the server never having seen the request.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2
from writ.client import WritError
from writ.testing_net import TLS_NAME, Certs, LoopbackServer, make_certs, start_server

from tests.integration.conftest import PROBE_IMAGE, RunningBroker, make_workspace

SECRET = "Bearer sk-live-7Hq2-NEVER-SHOWN-TO-TOOLS"


class Net:
    def __init__(self, broker: RunningBroker, plain: LoopbackServer, tls: LoopbackServer,
                 certs: Certs, answers: dict[str, list[list[str]]]) -> None:
        self.broker, self.plain, self.tls, self.certs = broker, plain, tls, certs
        self.answers = answers      # name -> successive DNS answers (the last repeats)

    def rule(self, **kw: Any) -> dict[str, Any]:
        base = {"schemes": ["http"], "host": "127.0.0.1", "ports": [self.plain.port],
                "methods": ["GET", "POST"], "path_prefixes": ["/hello", "/echo", "/big",
                                                              "/redirect", "/slow",
                                                              "/huge-header"]}
        return {**base, **kw}

    def token(self, *rules: dict[str, Any]) -> str:
        return self.broker.mint({"tools": [{"name": "netprobe"}],
                                 "net": list(rules) or [self.rule()]})

    def run(self, token: str, action: str, **args: Any) -> Any:
        out = self.broker.agent.invoke("netprobe", {"action": action, **args}, token)
        assert out.ok, f"probe failed: {out.error_code}: {out.error_message}\n{out.output!r}"
        return out.result["result"]

    def fetch(self, token: str, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        return self.run(token, "fetch", requests=list(requests))

    def net_events(self, since: int) -> list[audit_pb2.AuditEvent]:
        return [e for e in self.broker.audit_since(since)
                if e.operation.startswith("net.")]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
        probe_image: str) -> Iterator[Net]:
    root = Path(shutil.os.path.realpath(tmp_path_factory.mktemp("n")))  # type: ignore[attr-defined]
    certs = make_certs(root / "certs")
    plain, tls = start_server(), start_server(certs)
    answers: dict[str, list[list[str]]] = {}

    def lookup(host: str) -> list[str] | None:
        seq = answers.get(host)
        if not seq:
            return None
        return seq.pop(0) if len(seq) > 1 else seq[0]

    rb = RunningBroker(root / "state", make_workspace(root), docker_client,
                       net_ca_file=certs.ca_file, net_hosts={TLS_NAME: ["127.0.0.1"]},
                       net_lookup=lookup)
    everything = {"methods": ["GET", "POST", "PUT", "DELETE", "HEAD", "CONNECT"],
                  "path_prefixes": ["/"]}
    rb.register({
        "name": "netprobe", "image": PROBE_IMAGE, "description": "network attack probe",
        "net": [
            {"schemes": ["http", "https"], "host": "127.0.0.1",
             "ports": [plain.port, tls.port], **everything},
            {"schemes": ["https"], "host": TLS_NAME, "ports": [tls.port], **everything},
            {"schemes": ["http", "https"], "host": "*.rebind.test", **everything},
            {"schemes": ["http"], "host": "169.254.169.254", **everything},
        ],
        "limits": {"memory_mb": 128, "cpus": 0.5, "pids": 64, "timeout_s": 30, "tmp_mb": 8},
    })
    yield Net(rb, plain, tls, certs, answers)
    rb.stop()
    plain.stop()
    tls.stop()


def _only(events: list[audit_pb2.AuditEvent], operation: str) -> audit_pb2.AuditEvent:
    found = [e for e in events if e.operation == operation]
    assert len(found) == 1, [(e.operation, e.target, e.reason) for e in events]
    return found[0]


def _detail(ev: audit_pb2.AuditEvent) -> dict[str, Any]:
    return json.loads(ev.detail) if ev.detail else {}


# -- allowed requests ------------------------------------------------------------------------
def test_sdk_get_and_post_reach_the_server_and_are_recorded(net: Net) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    seen_before = len(net.plain.seen)
    get, post = net.fetch(token, {"url": net.plain.url("/hello")},
                          {"url": net.plain.url("/echo"), "method": "POST",
                           "json": {"n": 42}})
    assert get["ok"]["status"] == 200
    assert json.loads(get["ok"]["body"]) == {"path": "/hello", "method": "GET", "len": 0}
    assert json.loads(post["ok"]["body"])["len"] == len(json.dumps({"n": 42}))
    got = net.plain.seen[seen_before:]
    assert [(s.method, s.path) for s in got] == [("GET", "/hello"), ("POST", "/echo")]
    assert json.loads(got[1].body) == {"n": 42}
    events = net.net_events(seq)
    requests = [e for e in events if e.operation == "net.request"]
    assert [(e.decision, e.target) for e in requests] == [
        (audit_pb2.ALLOW, f"GET http://127.0.0.1:{net.plain.port}/hello"),
        (audit_pb2.ALLOW, f"POST http://127.0.0.1:{net.plain.port}/echo")]
    assert all(_detail(e)["address"] == "127.0.0.1" for e in requests)
    responses = [e for e in events if e.operation == "net.response"]
    assert [_detail(e)["http_status"] for e in responses] == [200, 200]
    assert responses[0].bytes == len(get["ok"]["body"])
    assert all(e.seq < r.seq for e, r in zip(requests, responses, strict=True))


def test_a_large_body_arrives_whole_over_the_pipe(net: Net) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    n = 5 << 20
    small, big = net.fetch(token, {"url": net.plain.url("/big?n=1000")},
                           {"url": net.plain.url(f"/big?n={n}")})
    assert small["ok"]["length"] == 1000       # in messages
    assert big["ok"]["length"] == n            # on the pipe
    assert big["ok"]["body"] == bytes(range(256)).decode("latin-1") * 16
    done = [e for e in net.net_events(seq) if e.operation == "net.response"]
    assert [e.bytes for e in done] == [1000, n]


def test_unmodified_client_through_the_proxy_variables(net: Net) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    out = net.run(token, "proxy", requests=[
        {"url": net.plain.url("/hello?via=proxy")},
        {"url": net.plain.url("/echo"), "method": "POST", "body": "form=1"},
        {"url": net.plain.url("/admin")},
    ])
    assert out["proxy"].startswith("http://127.0.0.1:")
    ok_get, ok_post, denied = out["results"]
    assert ok_get["status"] == 200 and json.loads(ok_get["body"])["path"] == "/hello?via=proxy"
    assert ok_post["status"] == 200 and json.loads(ok_post["body"])["len"] == 6
    assert denied["status"] == 403 and denied["writ"] == "PERMISSION_DENIED"
    assert "'/admin' is outside the allowed prefixes" in denied["body"]
    assert not [s for s in net.plain.seen if s.path == "/admin"]
    refused = [e for e in net.net_events(seq) if e.decision == audit_pb2.DENY]
    assert [(e.target, e.status) for e in refused] == [
        (f"GET http://127.0.0.1:{net.plain.port}/admin", "PERMISSION_DENIED")]


@pytest.mark.parametrize("proxy_env, error", [
    ("", "URLError"),                          # variables unset: a direct connection
    ("http://127.0.0.1:9", "URLError"),        # a forwarder that is gone
], ids=["unset", "forwarder-gone"])
def test_without_the_forwarder_nothing_connects(net: Net, proxy_env: str, error: str) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    seen = len(net.plain.seen)
    out = net.run(token, "proxy", proxy_env=proxy_env,
                  requests=[{"url": net.plain.url("/hello")},
                            {"url": f"http://{TLS_NAME}:{net.tls.port}/hello"}])
    assert [r.get("error") for r in out["results"]] == [error, error], out
    assert len(net.plain.seen) == seen
    assert net.net_events(seq) == []


# -- refused by the grant --------------------------------------------------------------------
@pytest.mark.parametrize("request_, message", [
    ({"path": "/admin"}, "path '/admin' is outside the allowed prefixes for 127.0.0.1"),
    ({"path": "/hello", "method": "DELETE"}, "method DELETE is not allowed for 127.0.0.1"),
    ({"path": "/hello/../admin"}, "has a '.' or '..' segment"),
    ({"path": "/hello/%2e%2e/admin"}, "has a '.' or '..' segment"),
    ({"host": "localhost"}, "has no rule allowing GET http://localhost"),
    ({"host": "127.0.0.2"}, "has no rule allowing GET http://127.0.0.2"),
], ids=["path", "method", "dot-segment", "encoded-dot-segment", "localhost", "other-ip"])
def test_forbidden_host_method_or_path_is_refused_and_recorded(
        net: Net, request_: dict[str, str], message: str) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    seen = len(net.plain.seen)
    url = net.plain.url(request_.get("path", "/hello"), request_.get("host", "127.0.0.1"))
    (out,) = net.fetch(token, {"url": url, "method": request_.get("method", "GET")})
    assert out["code"] == "PERMISSION_DENIED"
    assert message in out["message"]
    ev = _only(net.net_events(seq), "net.request")
    assert (ev.decision, ev.status) == (audit_pb2.DENY, "PERMISSION_DENIED")
    assert message in ev.reason
    assert len(net.plain.seen) == seen


def test_request_budget_is_enforced_across_calls(net: Net) -> None:
    token = net.token(net.rule(id="two", max_requests=2))
    outs = net.fetch(token, *[{"url": net.plain.url("/hello")}] * 3)
    assert [o.get("code") for o in outs] == [None, None, "PERMISSION_DENIED"]
    assert "two" in outs[2]["message"] and "requests" in outs[2]["message"]


def test_byte_budget_cuts_a_response_off(net: Net) -> None:
    token = net.token(net.rule(id="small", max_bytes=64 << 10))
    seq = net.broker.last_seq()
    (out,) = net.fetch(token, {"url": net.plain.url("/big?n=1048576")})
    assert out["code"] == "PERMISSION_DENIED"
    assert "budget exhausted: small allows 65536 net bytes in total" in out["message"]
    events = net.net_events(seq)
    assert [(e.operation, e.decision) for e in events] == [
        ("net.request", audit_pb2.ALLOW), ("net.request", audit_pb2.DENY)]


def test_byte_budget_cuts_an_upload_off(net: Net) -> None:
    token = net.token(net.rule(id="upload", max_bytes=1 << 20))
    seq = net.broker.last_seq()
    (out,) = net.fetch(token, {"url": net.plain.url("/echo"), "method": "POST",
                               "body_bytes": 3 << 20})
    assert out["code"] == "PERMISSION_DENIED"
    assert "budget exhausted: upload allows 1048576 net bytes in total" in out["message"]
    events = net.net_events(seq)
    assert [(e.operation, e.decision, e.status) for e in events] == [
        ("net.request", audit_pb2.ALLOW, "OK"),
        ("net.request", audit_pb2.DENY, "PERMISSION_DENIED")]


def test_raw_sockets_reach_nothing(net: Net) -> None:
    token = net.token()
    out = net.run(token, "net_connect", targets=[
        ["127.0.0.1", net.plain.port], ["1.1.1.1", 80], ["169.254.169.254", 80],
        ["172.17.0.1", 2375]])
    assert out[f"127.0.0.1:{net.plain.port}"]["error"] == "ECONNREFUSED"  # its own loopback
    for target in ("1.1.1.1:80", "169.254.169.254:80", "172.17.0.1:2375"):
        assert out[target]["error"] == "ENETUNREACH", out


# -- address safety (SSRF) -------------------------------------------------------------------
@pytest.mark.parametrize("host, code, message", [
    ("2130706433", "INVALID_ARGUMENT", ("IP literal '2130706433' is not in canonical form "
                                       "(127.0.0.1)")),
    ("0x7f.0.0.1", "INVALID_ARGUMENT", "is not in canonical form (127.0.0.1)"),
    ("0177.0.0.1", "INVALID_ARGUMENT", "is not in canonical form (127.0.0.1)"),
    ("127.1", "INVALID_ARGUMENT", "is not in canonical form (127.0.0.1)"),
    ("[::ffff:127.0.0.1]", "PERMISSION_DENIED", "GET http://[::ffff:7f00:1]:"),
    ("[::FFFF:7f00:0001]", "PERMISSION_DENIED", "GET http://[::ffff:7f00:1]:"),
    ("[::1]", "PERMISSION_DENIED", "GET http://[::1]"),
    ("user:pw@127.0.0.1", "INVALID_ARGUMENT", "URLs with user information are refused"),
    ("127.0.0.1:1@evil.example", "INVALID_ARGUMENT", "URLs with user information"),
    ("bücher.example", "PERMISSION_DENIED", "GET http://xn--bcher-kva.example"),
    ("a_b.example", "INVALID_ARGUMENT", "'a_b.example' is not a host name"),
], ids=["decimal", "hex", "octal", "short", "mapped-v6", "mapped-v6-hex", "v6-loopback",
        "userinfo", "userinfo-confusion", "idna", "underscore"])
def test_ip_notations_userinfo_and_idna_are_refused(net: Net, host: str, code: str,
                                                    message: str) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    seen = len(net.plain.seen)
    url = f"http://{host}" + (f":{net.plain.port}" if "@" not in host else "") + "/hello"
    (out,) = net.fetch(token, {"url": url})
    assert out["code"] == code, out
    assert message in out["message"]
    ev = _only(net.net_events(seq), "net.request")
    assert (ev.decision, ev.status) == (audit_pb2.DENY, code)
    assert len(net.plain.seen) == seen


def test_mixed_case_host_is_the_same_host(net: Net) -> None:
    token = net.token(net.rule(schemes=["https"], host=TLS_NAME, ports=[net.tls.port]))
    (out,) = net.fetch(token, {"url": f"https://SeCuRe.TeSt:{net.tls.port}/hello"})
    assert out["ok"]["status"] == 200


def test_a_name_resolving_to_a_special_address_is_refused(net: Net) -> None:
    rule = net.rule(host="*.rebind.test", ports=[])
    token = net.token(rule)
    net.answers["loop.rebind.test"] = [["127.0.0.1"]]
    net.answers["mixed.rebind.test"] = [["93.184.216.34", "10.0.0.7"]]
    net.answers["meta.rebind.test"] = [["169.254.169.254"]]
    net.answers["v6.rebind.test"] = [["::ffff:192.168.1.1"]]
    seq = net.broker.last_seq()
    outs = net.fetch(token, *[{"url": f"http://{h}.rebind.test/hello"}
                              for h in ("loop", "mixed", "meta", "v6")])
    assert [o["code"] for o in outs] == ["PERMISSION_DENIED"] * 4
    assert "resolves to 127.0.0.1 is a loopback address" in outs[0]["message"]
    assert "10.0.0.7 is a private address" in outs[1]["message"]
    assert "169.254.169.254 is a cloud metadata address" in outs[2]["message"]
    assert "embeds 192.168.1.1" in outs[3]["message"]
    events = net.net_events(seq)
    assert [e.decision for e in events] == [audit_pb2.DENY] * 4


def test_dns_answer_that_changes_after_the_check_is_not_used(net: Net) -> None:
    """The first answer is public and is pinned: the connection goes there (whether or
    not this machine can reach it), never to the loopback a second lookup would give."""
    token = net.token(net.rule(host="*.rebind.test", ports=[]))
    net.answers["flip.rebind.test"] = [["93.184.216.34"], ["127.0.0.1"]]
    seq = net.broker.last_seq()
    seen = len(net.plain.seen)
    (out,) = net.fetch(token, {"url": "http://flip.rebind.test/hello", "timeout": 3})
    assert out.get("code") in (None, "UNAVAILABLE", "DEADLINE_EXCEEDED"), out
    assert "127.0.0.1" not in json.dumps(out)
    allow = [e for e in net.net_events(seq) if e.decision == audit_pb2.ALLOW]
    assert _detail(allow[0])["address"] == "93.184.216.34"
    assert len(net.plain.seen) == seen
    assert net.answers["flip.rebind.test"] == [["127.0.0.1"]]  # asked exactly once


def test_redirects_are_rechecked_hop_by_hop(net: Net) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    ok_to = net.plain.url("/hello?hop=2")
    to_meta = "http://169.254.169.254/latest/meta-data/iam"
    to_admin = net.plain.url("/admin")
    followed, to_metadata, to_forbidden_path, not_followed = net.fetch(
        token,
        {"url": net.plain.url(f"/redirect?to={ok_to}"), "follow": True},
        {"url": net.plain.url(f"/redirect?to={to_meta}"), "follow": True},
        {"url": net.plain.url(f"/redirect?code=307&to={to_admin}"), "follow": True},
        {"url": net.plain.url(f"/redirect?to={to_meta}")})
    assert followed["ok"]["redirects"] == 1 and followed["ok"]["url"] == ok_to
    assert json.loads(followed["ok"]["body"])["path"] == "/hello?hop=2"
    assert to_metadata["code"] == "PERMISSION_DENIED"
    assert to_metadata["message"].startswith("redirect refused: ")
    assert "169.254.169.254" in to_metadata["message"]
    assert to_forbidden_path["code"] == "PERMISSION_DENIED"
    assert "'/admin' is outside the allowed prefixes" in to_forbidden_path["message"]
    assert not_followed["ok"]["status"] == 302
    assert not [s for s in net.plain.seen if s.path == "/admin"]
    denied = [e for e in net.net_events(seq) if e.decision == audit_pb2.DENY]
    assert [e.target for e in denied] == [
        "GET http://169.254.169.254/latest/meta-data/iam",
        f"GET http://127.0.0.1:{net.plain.port}/admin"]
    assert all(_detail(e)["hop"] == 1 and "redirect_from" in _detail(e) for e in denied)


def test_metadata_literal_is_refused_unless_the_grant_names_it(net: Net) -> None:
    token = net.token()
    (out,) = net.fetch(token, {"url": "http://169.254.169.254/latest/meta-data"})
    assert out["code"] == "PERMISSION_DENIED"
    assert out["message"] == ("grant has no rule allowing GET "
                              "http://169.254.169.254:80/latest/meta-data")


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("request_, code, message", [
    ({"url": "ftp://127.0.0.1/x"}, "INVALID_ARGUMENT", "URL scheme must be http or https"),
    ({"url": "http://[::1/x"}, "INVALID_ARGUMENT", "malformed URL"),
    ({"url": "http:///hello"}, "INVALID_ARGUMENT", "has no host"),
    ({"url": "http://127.0.0.1:99999/"}, "INVALID_ARGUMENT", "malformed URL"),
    ({"url": "http://127.0.0.1/a b"}, "INVALID_ARGUMENT", "contains spaces"),
    ({"method": "BREW-COFFEE"}, "INVALID_ARGUMENT", "must be 1-16 upper-case letters"),
    ({"headers": {"Host": "evil.example"}}, "INVALID_ARGUMENT",
     "Host header 'evil.example' differs from the URL's host"),
    ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "INVALID_ARGUMENT", "CR, LF or NUL"),
    ({"headers": {f"X-H{i}": "v" for i in range(150)}}, "INVALID_ARGUMENT",
     "150 headers; at most 100"),
    ({"headers": {f"X-H{i}": "v" * 8000 for i in range(10)}}, "INVALID_ARGUMENT",
     "request headers are"),
], ids=["scheme", "bracket", "no-host", "port", "space", "method", "host-header", "crlf",
        "many-headers", "large-headers"])
def test_bad_requests_get_a_precise_status_and_a_record(
        net: Net, request_: dict[str, Any], code: str, message: str) -> None:
    token = net.token()
    seq = net.broker.last_seq()
    seen = len(net.plain.seen)
    spec = {"url": net.plain.url("/hello"), **request_}
    (out,) = net.fetch(token, spec)
    assert out["code"] == code, out
    assert message in out["message"]
    ev = _only(net.net_events(seq), "net.request")
    assert (ev.decision, ev.status) == (audit_pb2.DENY, code)
    assert len(net.plain.seen) == seen


def test_slow_server_hits_the_time_limit(net: Net) -> None:
    token = net.token(net.rule(timeout_seconds=1))
    seq = net.broker.last_seq()
    (out,) = net.fetch(token, {"url": net.plain.url("/slow?s=4")})
    assert out["code"] == "DEADLINE_EXCEEDED"
    assert "took longer than its time limit" in out["message"]
    events = net.net_events(seq)
    assert [(e.decision, e.status) for e in events] == [
        (audit_pb2.ALLOW, "OK"), (audit_pb2.DENY, "DEADLINE_EXCEEDED")]


def test_oversized_response_head_is_refused(net: Net) -> None:
    token = net.token()
    (out,) = net.fetch(token, {"url": net.plain.url("/huge-header")})
    assert out["code"] == "UNAVAILABLE"
    assert "not valid HTTP/1.1" in out["message"]


# -- TLS tunnels (CONNECT) -------------------------------------------------------------------
def _tunnel_rule(net: Net, **kw: Any) -> dict[str, Any]:
    return {"schemes": ["https"], "host": TLS_NAME, "ports": [net.tls.port],
            "methods": ["CONNECT"], "path_prefixes": ["/"], **kw}


def test_connect_tunnel_end_to_end_tls(net: Net) -> None:
    token = net.token(_tunnel_rule(net))
    seq = net.broker.last_seq()
    out = net.run(token, "proxy", cadata=net.certs.ca_pem,
                  requests=[{"url": f"https://{TLS_NAME}:{net.tls.port}/hello?tunnel=1"}])
    (res,) = out["results"]
    assert res["status"] == 200 and json.loads(res["body"])["path"] == "/hello?tunnel=1"
    events = net.net_events(seq)
    assert [(e.operation, e.decision) for e in events] == [
        ("net.connect", audit_pb2.ALLOW), ("net.response", audit_pb2.ALLOW)]
    assert events[0].target == f"CONNECT https://{TLS_NAME}:{net.tls.port}/"
    assert _detail(events[1])["sent"] > 0 and events[1].bytes > 0


def test_connect_refuses_a_server_name_other_than_the_granted_host(net: Net) -> None:
    token = net.token(_tunnel_rule(net))
    seq = net.broker.last_seq()
    seen = len(net.tls.seen)
    out = net.run(token, "tunnel_sni", connect=f"{TLS_NAME}:{net.tls.port}",
                  sni="other.example", cadata=net.certs.ca_pem, check_hostname=False)
    assert out["connect"] == "HTTP/1.1 200 Connection Established"
    assert out["tls"] != "ok"
    ev = _only(net.net_events(seq), "net.connect")
    assert (ev.decision, ev.status) == (audit_pb2.DENY, "PERMISSION_DENIED")
    assert "ClientHello asks for 'other.example'" in ev.reason
    assert len(net.tls.seen) == seen


def test_connect_needs_a_connect_rule(net: Net) -> None:
    token = net.token(net.rule(schemes=["https"], host=TLS_NAME, ports=[net.tls.port],
                               path_prefixes=["/"]))
    out = net.run(token, "tunnel_sni", connect=f"{TLS_NAME}:{net.tls.port}", sni=TLS_NAME,
                  cadata=net.certs.ca_pem)
    assert out["connect"].startswith("HTTP/1.1 403")
    assert "method CONNECT is not allowed" in out["body"]


# -- secrets ---------------------------------------------------------------------------------
def test_secret_reaches_the_server_and_nowhere_the_tool_can_read(net: Net) -> None:
    net.broker.operator.put_secret("api-token", SECRET.encode())
    token = net.token({"schemes": ["https"], "host": TLS_NAME, "ports": [net.tls.port],
                       "methods": ["GET"], "path_prefixes": ["/api/", "/reflect"],
                       "secrets": [{"secret": "api-token", "header": "Authorization",
                                    "path_prefix": "/api/"}]})
    seq = net.broker.last_seq()
    seen = len(net.tls.seen)
    base = f"https://{TLS_NAME}:{net.tls.port}"
    api, other, forged = net.fetch(
        token, {"url": base + "/api/me"}, {"url": base + "/reflect"},
        {"url": base + "/api/me", "headers": {"Authorization": "Bearer tool-made"}})
    got = net.tls.seen[seen:]
    assert got[0].headers["Authorization"] == SECRET
    assert "Authorization" not in got[1].headers      # outside the secret's path prefix
    assert got[2].headers["Authorization"] == SECRET  # the tool's own value is replaced
    for out in (api, other, forged):
        assert SECRET not in json.dumps(out)
    assert "[secret withheld by writ]" in api["ok"]["body"]
    assert dict(api["ok"]["headers"])["X-Echo-Auth"] == "[secret withheld by writ]"
    assert net.run(token, "secret_hunt", needle="NEVER-SHOWN")["found"] == []
    raw = net.broker.config.audit_path.read_text()
    assert "NEVER-SHOWN" not in raw
    allowed = [e for e in net.net_events(seq) if e.operation == "net.request"]
    assert [_detail(e).get("secrets") for e in allowed] == [["api-token"], None,
                                                            ["api-token"]]


def test_secret_for_a_secret_the_broker_does_not_hold_is_refused_at_mint(net: Net) -> None:
    with pytest.raises(WritError) as err:
        net.token({"schemes": ["https"], "host": TLS_NAME, "ports": [net.tls.port],
                   "methods": ["GET"], "path_prefixes": ["/api/"],
                   "secrets": [{"secret": "never-stored", "header": "Authorization",
                                "path_prefix": "/"}]})
    assert err.value.code == "FAILED_PRECONDITION"
    assert "grant attaches secret(s) ['never-stored'] the broker does not hold" in \
        err.value.details


def test_secrets_cli_never_prints_a_value(net: Net, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from writ import cli

    state = ["--state-dir", str(net.broker.state_dir)]
    value = tmp_path / "value"
    value.write_text("Bearer cli-set-NEVER-PRINTED\n")
    assert cli.main([*state, "secrets", "set", "cli-token", "--from-file", str(value)]) == 0
    assert cli.main([*state, "--json", "secrets", "list"]) == 0
    assert cli.main([*state, "secrets", "delete", "cli-token"]) == 0
    assert cli.main([*state, "secrets", "delete", "cli-token"]) == 1
    out, err = capsys.readouterr()
    assert "NEVER-PRINTED" not in out + err
    assert "stored secret 'cli-token' (28 bytes)" in out
    assert {"name": "cli-token", "length": 28} in [
        {k: v for k, v in row.items() if k != "created"}
        for row in json.loads(out.split("\n", 1)[1].rsplit("deleted", 1)[0])]
    assert "NOT_FOUND: no secret named 'cli-token'" in err
    records = [e for e in net.broker.audit() if e.operation.startswith("secret.")
               and e.target == "cli-token"]
    assert [(e.operation, e.decision) for e in records] == [
        ("secret.put", audit_pb2.ALLOW), ("secret.delete", audit_pb2.ALLOW),
        ("secret.delete", audit_pb2.DENY)]
    assert "NEVER-PRINTED" not in net.broker.config.audit_path.read_text()


def test_explain_names_the_secrets_a_request_would_carry(net: Net) -> None:
    from writ._proto import control_pb2

    net.broker.operator.put_secret("explained", b"Bearer explain-NEVER-SHOWN")
    token = net.token({"schemes": ["https"], "host": TLS_NAME, "ports": [net.tls.port],
                       "methods": ["GET"], "path_prefixes": ["/api/", "/reflect"],
                       "secrets": [{"secret": "explained", "header": "Authorization",
                                    "path_prefix": "/api/"}]})
    seq = net.broker.last_seq()
    base = f"https://{TLS_NAME}:{net.tls.port}"
    answers = [net.broker.agent.explain(control_pb2.ExplainRequest(
        token=token, tool="netprobe", net=control_pb2.ExplainNet(method="GET", url=url)))
        for url in (base + "/api/me", base + "/reflect", base + "/admin")]
    assert [(a.allowed, list(a.secrets)) for a in answers] == [
        (True, ["Authorization: explained"]), (True, []), (False, [])]
    assert any("adds secret 'explained' as Authorization on /api/" in line
               for line in answers[0].authority)
    assert "NEVER-SHOWN" not in str(answers)
    assert net.broker.audit_since(seq) == []  # a dry run acts on nothing
