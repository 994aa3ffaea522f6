"""People to look at: the seeding shared by the browser tests and `make screenshot`."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.server import Server

READ_KEY = "ui-read-key-5f1c0b7e93"
ADMIN_KEY = "ui-admin-key-d41d8cd98f"


def unique() -> str:
    """A token that keeps one test's values apart from every other test's."""
    return uuid.uuid4().hex[:10]


class Api:
    """The JSON API of the server under test, as the page's user (a key) sees it."""

    def __init__(self, server: Server, key: str = ADMIN_KEY) -> None:
        self.server = server
        self.key = key

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return self.server.request_json(method, path, body, headers)

    def identify(self, email: str | None, phone: str | None) -> dict[str, Any]:
        status, body = self.call("POST", "/identify", {"email": email, "phoneNumber": phone})
        assert status == 200, body
        contact: dict[str, Any] = body["contact"]
        return contact

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert status == 200, (method, path, status, answer)
        return answer


def glued_person(api: Api, tag: str) -> dict[str, Any]:
    """Two people glued by one junk phone: 1=(ea, pa), 2=(eb, pb), 3=(ec, pa),
    4=(ea, junk), then (eb, junk) merges 2 into 1 through a link (no new contact).
    Erasing the junk phone splits them again: {1, 3, 4} and {2}."""
    values = {
        "ea": f"ann.{tag}@shop.test",
        "eb": f"bob.{tag}@shop.test",
        "ec": f"ann.work.{tag}@office.test",
        "pa": f"1{int(tag, 16) % 10**8:08d}1",
        "pb": f"2{int(tag, 16) % 10**8:08d}2",
        "junk": f"3{int(tag, 16) % 10**8:08d}3",
    }
    first = api.identify(values["ea"], values["pa"])
    second = api.identify(values["eb"], values["pb"])
    api.identify(values["ec"], values["pa"])
    api.identify(values["ea"], values["junk"])
    merged = api.identify(values["eb"], values["junk"])
    assert merged["primaryContactId"] == first["primaryContactId"]
    assert second["primaryContactId"] in merged["secondaryContactIds"]
    return {**values, "primary": first["primaryContactId"], "absorbed": second["primaryContactId"]}


def chain_person(api: Api, tag: str, contacts: int) -> dict[str, Any]:
    """A person of ``contacts`` contacts in a chain: (e0,p0), (e1,p0), (e1,p1), (e2,p1)...

    No value gains more than two partners, so no guard calls any of them generic.
    """
    email = [f"c{i}.{tag}@chain.test" for i in range(contacts)]
    phone = [f"4{int(tag, 16) % 10**6:06d}{i:04d}" for i in range(contacts)]
    first = api.identify(email[0], phone[0])
    for n in range(1, contacts):
        i = n // 2 + n % 2
        api.identify(email[i], phone[i - 1] if n % 2 else phone[i])
    person = api.ok("GET", f"/persons/{first['primaryContactId']}")["contact"]
    assert 1 + len(person["secondaryContactIds"]) == contacts
    return {"primary": first["primaryContactId"], "emails": email, "phones": phone}
