"""The access policy without sockets (docs/security.md): tokens, addresses,
WebSocket origins, the admission counts and their defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_layers import PACKAGE, runtime_imports

from trio_msink.fronts._access import (
    DEFAULT_MAX_CLIENTS_CAP,
    FD_OVERHEAD,
    OPERATOR_RESERVE,
    Admission,
    Front,
    Gate,
    Role,
    Tokens,
    default_max_clients,
    host_of,
    presented_token,
)

# -- tokens --------------------------------------------------------------------------


def test_tokens_match_only_their_own() -> None:
    tokens = Tokens(["alpha", "beta"])
    assert tokens.enabled
    assert tokens.matches("alpha") and tokens.matches(b"beta")
    assert not tokens.matches("alph") and not tokens.matches("alphaa")
    assert not tokens.matches("")
    assert not Tokens().enabled and not Tokens().matches("alpha")


def test_tokens_keep_no_plain_text() -> None:
    tokens = Tokens(["s3cret-token"])
    assert "s3cret-token" not in repr(vars(tokens))


@pytest.mark.parametrize("bad", ["", "two words", "tab\there"])
def test_a_token_must_be_one_word(bad: str) -> None:
    with pytest.raises(ValueError, match="token"):
        Tokens([bad])


def test_token_file_lines_comments_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# viewers\n  one  \n\ntwo\n")
    tokens = Tokens(["fixed"], str(path))
    assert [tokens.matches(t) for t in ("one", "two", "fixed", "# viewers")] == [
        True, True, True, False]
    assert not tokens.changed()
    path.write_text("three\n")
    os.utime(path, ns=(1, 1))  # a different mtime even within the clock's resolution
    assert tokens.changed()
    tokens.reload()
    assert tokens.matches("three") and not tokens.matches("one") and tokens.matches("fixed")
    assert not tokens.changed()


def test_token_file_that_breaks_keeps_the_previous_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("one\n")
    tokens = Tokens(path=str(path))
    path.write_text("one two\n")
    with pytest.raises(ValueError, match="white space"):
        tokens.reload()
    path.unlink()
    assert not tokens.changed()  # gone: nothing to re-read
    with pytest.raises(FileNotFoundError):
        tokens.reload()
    assert tokens.matches("one")


def test_an_empty_token_file_still_means_tokens_are_required(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("")
    gate = Gate(tokens=Tokens(path=str(path)))
    assert gate.authorize(Role.VIEWER, b"/stream?token=x", []) is not None


def test_missing_token_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Tokens(path=str(tmp_path / "absent"))


@pytest.mark.parametrize(("target", "headers", "token"), [
    (b"/stream", [(b"authorization", b"Bearer abc")], "abc"),
    (b"/stream", [(b"Authorization", b"bearer   abc ")], "abc"),
    (b"/stream?token=xyz", [], "xyz"),
    (b"/stream?a=1&token=x%2By", [], "x+y"),
    (b"/stream?token=q", [(b"authorization", b"Bearer h")], "h"),  # the header wins
    (b"/stream", [(b"authorization", b"Basic Zm9vOmJhcg==")], None),
    (b"/stream?tokens=x", [], None),
    (None, [], None),
])
def test_presented_token(target: bytes | None, headers: list[tuple[bytes, bytes]],
                         token: str | None) -> None:
    assert presented_token(target, headers) == token


def test_viewer_and_operator_tokens() -> None:
    gate = Gate(tokens=Tokens(["view"]), admin_tokens=Tokens(["boss"]))
    ok = [(b"authorization", b"Bearer view")]
    assert gate.authorize(Role.VIEWER, b"/stream", ok) is None
    assert gate.authorize(Role.VIEWER, b"/stream?token=boss", []) is None
    missing = gate.authorize(Role.VIEWER, b"/stream", [])
    assert missing is not None and missing.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="trio-msink"') in missing.headers
    wrong = gate.authorize(Role.VIEWER, b"/stream?token=nope", [])
    assert wrong is not None and wrong.status == 403
    viewer_at_stats = gate.authorize(Role.OPERATOR, b"/stats?token=view", [])
    assert viewer_at_stats is not None and viewer_at_stats.status == 403
    assert gate.authorize(Role.OPERATOR, b"/stats?token=boss", []) is None


def test_without_tokens_everyone_is_admitted() -> None:
    gate = Gate()
    assert gate.authorize(Role.VIEWER, b"/stream", []) is None
    assert gate.authorize(Role.OPERATOR, b"/stats", []) is None


def test_an_admin_token_alone_closes_only_the_operator_pages() -> None:
    gate = Gate(admin_tokens=Tokens(["boss"]))
    assert gate.authorize(Role.VIEWER, b"/stream", []) is None
    refusal = gate.authorize(Role.OPERATOR, b"/stats", [])
    assert refusal is not None and refusal.status == 401


def test_viewer_tokens_without_an_admin_token_close_the_operator_pages() -> None:
    gate = Gate(tokens=Tokens(["view"]))
    refusal = gate.authorize(Role.OPERATOR, b"/stats?token=view", [])
    assert refusal is not None and refusal.status == 403 and "--admin-token" in refusal.message


def test_refusals_never_contain_the_token() -> None:
    gate = Gate(tokens=Tokens(["view"]), admin_tokens=Tokens(["boss"]))
    for token in ("view", "wrong-one"):
        refusal = gate.authorize(Role.OPERATOR, f"/stats?token={token}", [])
        assert refusal is not None
        assert token not in repr(refusal)


def test_the_tcp_front_is_not_asked_for_a_token() -> None:
    gate = Gate(tokens=Tokens(["view"]))
    assert gate.check(Front.TCP, Role.VIEWER, "127.0.0.1", None, []) is None
    assert gate.check(Front.HTTP, Role.VIEWER, "127.0.0.1", b"/stream", []) is not None


# -- addresses -------------------------------------------------------------------------


def test_allow_lists_networks() -> None:
    gate = Gate(allow=["127.0.0.0/30", "::1", "10.1.2.3"])
    assert gate.address_allowed("127.0.0.1") and gate.address_allowed("127.0.0.3")
    assert not gate.address_allowed("127.0.0.4")
    assert gate.address_allowed("::1") and not gate.address_allowed("::2")
    assert gate.address_allowed("::ffff:10.1.2.3")  # IPv4 on a dual-stack socket
    assert not gate.address_allowed(None) and not gate.address_allowed("not-an-ip")
    assert Gate().address_allowed(None)


def test_allow_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        Gate(allow=["10.0.0.0/33"])


@pytest.mark.parametrize(("address", "host"), [
    ("127.0.0.1:5000", "127.0.0.1"), ("[::1]:80", "::1"), (None, None), ("/tmp/s", "/tmp/s"),
])
def test_host_of(address: str | None, host: str | None) -> None:
    assert host_of(address) == host


# -- WebSocket origins ---------------------------------------------------------------------


def test_origin_rules() -> None:
    gate = Gate(ws_origins=["https://viewer.example:8443"])
    gate.page_ports = {8080}
    assert gate.origin_allowed(None, 8081)  # players and scripts send none
    assert gate.origin_allowed("http://127.0.0.1:8080", 8081)  # our own page
    assert gate.origin_allowed("http://localhost:8081", 8081)
    assert gate.origin_allowed("http://[::1]:8080", 8081)
    assert gate.origin_allowed("https://viewer.example:8443", 8081)
    assert not gate.origin_allowed("https://viewer.example", 8081)  # port 443
    assert not gate.origin_allowed("http://evil.example:8080", 8081)
    assert not gate.origin_allowed("http://127.0.0.1:3000", 8081)  # another local app
    assert not gate.origin_allowed("null", 8081)
    assert Gate(ws_origins=["*"]).origin_allowed("http://evil.example", 8081)


def test_origin_of_a_listening_host() -> None:
    gate = Gate()
    gate.listen_hosts = {"192.0.2.7"}
    assert gate.origin_allowed("http://192.0.2.7:9001", 9001)
    assert not gate.origin_allowed("http://192.0.2.8:9001", 9001)


def test_bad_origin_flag() -> None:
    with pytest.raises(ValueError, match="origin"):
        Gate(ws_origins=["ftp://x"])


def test_origin_is_checked_before_the_token() -> None:
    gate = Gate(tokens=Tokens(["view"]))
    refusal = gate.check(Front.WEBSOCKET, Role.VIEWER, "127.0.0.1", "/?token=view",
                         [(b"origin", b"http://evil.example")], ws_port=8081)
    assert refusal is not None and refusal.status == 403 and "origin" in refusal.message


# -- admission ------------------------------------------------------------------------------


def test_default_max_clients_formula() -> None:
    assert default_max_clients(1024) == 1024 - FD_OVERHEAD - OPERATOR_RESERVE
    assert default_max_clients(64) == 64 - FD_OVERHEAD - OPERATOR_RESERVE
    assert default_max_clients(10) == 1
    assert default_max_clients(1 << 20) == DEFAULT_MAX_CLIENTS_CAP


def test_viewers_are_limited_in_total_and_per_address() -> None:
    admission = Admission(3, 2)
    assert admission.add_viewer("a") and admission.add_viewer("a")
    assert not admission.add_viewer("a")  # per address
    assert admission.add_viewer("b")
    assert not admission.add_viewer("c")  # in total
    admission.remove_viewer("a")
    assert admission.add_viewer("c")
    assert admission.viewers == 3


def test_connections_keep_a_reserve_above_the_viewers() -> None:
    admission = Admission(2, 1, reserve=2)
    assert all(admission.open_connection("a") for _ in range(3))  # per address: 1 + 2
    assert not admission.open_connection("a")
    assert admission.open_connection("b")
    assert not admission.open_connection("c")  # in total: 2 + 2
    admission.close_connection("a")
    assert admission.open_connection("c")


def test_counts_forget_addresses_that_left() -> None:
    admission = Admission(10)
    for host in map(str, range(5)):
        admission.open_connection(host)
        admission.add_viewer(host)
    for host in map(str, range(5)):
        admission.remove_viewer(host)
        admission.close_connection(host)
    assert admission.connections == admission.viewers == 0
    assert not admission._connections and not admission._viewers


@pytest.mark.parametrize(("args", "name"), [
    ((0,), "max_clients"), ((5, 0), "max_clients_per_ip"), ((5, 5, -1), "reserve"),
])
def test_admission_refuses_bad_limits(args: tuple[int, ...], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Admission(*args)


def test_gate_enter_counts_viewers_for_the_block() -> None:
    gate = Gate(admission=Admission(1))
    with gate.enter(Front.HTTP, Role.VIEWER, "127.0.0.1", b"/stream") as first:
        assert first is None
        with gate.enter(Front.HTTP, Role.VIEWER, "127.0.0.1", b"/stream") as second:
            assert second is not None and second.status == 503 and second.close_code == 1013
            assert ("Retry-After", "5") in second.headers
        with gate.enter(Front.HTTP, Role.OPERATOR, "127.0.0.1", b"/stats") as operator:
            assert operator is None  # the operator is not a viewer
    with gate.enter(Front.HTTP, Role.VIEWER, "127.0.0.1", b"/stream") as again:
        assert again is None
    assert gate.admission is not None and gate.admission.viewers == 0


def test_a_refused_token_is_not_counted() -> None:
    gate = Gate(tokens=Tokens(["t"]), admission=Admission(1))
    with gate.enter(Front.HTTP, Role.VIEWER, "h", b"/stream") as refusal:
        assert refusal is not None and refusal.status == 401
        assert gate.admission is not None and gate.admission.viewers == 0


@pytest.mark.parametrize("module", ["fronts/_access", "fronts/_tokens", "fronts/_admission"])
def test_the_policy_imports_no_trio(module: str) -> None:
    assert (PACKAGE / f"{module}.py").exists()
    imports = runtime_imports(module)
    assert not {name for name in imports if name.split(".")[0] in ("trio", "anyio")}
    assert not {name for name in imports if name.lstrip(".").split(".")[0] in ("cli", "trio_msink")}
