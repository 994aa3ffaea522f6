"""The explorer page (issue 11): search, the graph, why, history, erasure, in a real browser."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from tests.support.server import Server
from tests.ui.conftest import Explorer, pairs
from tests.ui.people import ADMIN_KEY, READ_KEY, Api, chain_person, glued_person, unique


def test_search_finds_a_person(page: Explorer, api: Api) -> None:
    tag = unique()
    first = api.identify(f"lorraine.{tag}@hillvalley.edu", "5551955")
    api.identify(f"mcfly.{tag}@hillvalley.edu", "5551955")
    page.open(key=READ_KEY)
    page.search(email=f"  McFly.{tag}@HillValley.edu ")
    row = page.visible("#search-results table.results tbody tr")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == f"#{first['primaryContactId']}"
    assert cells[1].split("\n") == [f"lorraine.{tag}@hillvalley.edu", f"mcfly.{tag}@hillvalley.edu"]
    assert cells[2] == "5551955"
    assert cells[3] == "2"
    assert len(page.find_all("#search-results tbody tr")) == 1
    # From the result to the person's page.
    row.find_element(By.CSS_SELECTOR, "a.person-link").click()
    page.wait_rendered(first["primaryContactId"])
    assert page.find("#person-title").text == f"Person #{first['primaryContactId']}"
    # A value nobody holds: an empty answer, said so; bad input: the API's message, as text.
    page.load("#/")
    page.search(email=f"nobody.{tag}@hillvalley.edu")
    assert "No person" in page.visible("#search-results p.empty").text
    page.search(email="not-an-email")
    page.wait(lambda d: "Email:" in d.find_element(By.ID, "search-error").text)
    page.assert_no_console_errors()


def test_the_graph_has_one_node_per_contact_and_the_edges_of_the_graph_endpoint(
    page: Explorer, api: Api
) -> None:
    glued = glued_person(api, unique())
    graph = api.ok("GET", f"/persons/{glued['primary']}/graph")
    page.open(f"#/person/{glued['primary']}")
    page.wait_rendered(glued["primary"])
    contact_ids = [c["id"] for c in graph["contacts"]]
    assert len(contact_ids) == 4
    assert sorted(page.drawn_nodes()) == sorted(contact_ids)
    assert page.drawn_edges() == pairs(graph["edges"])
    assert page.find(f'#graph .node.primary[data-contact="{glued["primary"]}"]')
    assert len(page.find_all("#graph .node.primary")) == 1
    # Each edge is labelled with why it exists: the shared value, or "link".
    labels = " ".join(e.text for e in page.find_all("#graph .edge-label"))
    for edge in graph["edges"]:
        assert (edge["value"] if edge["via"] != "link" else "link") in labels
    # The contacts table: one row per contact, with its role.
    rows = page.find_all("#contacts tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == [f"#{i}" for i in contact_ids]
    assert rows[0].find_elements(By.TAG_NAME, "td")[3].text == "primary"
    page.assert_no_console_errors()


def test_clicking_two_contacts_shows_the_chain(page: Explorer, api: Api) -> None:
    glued = glued_person(api, unique())
    graph = api.ok("GET", f"/persons/{glued['primary']}/graph")
    ids = [c["id"] for c in graph["contacts"]]
    a, b = glued["primary"], glued["absorbed"]
    why = api.ok("GET", f"/persons/{glued['primary']}/why?a={a}&b={b}")
    assert why["contactIds"][0] == a and why["contactIds"][-1] == b
    page.open(f"#/person/{glued['primary']}")
    page.wait_rendered(glued["primary"])
    page.node(a).click()
    page.node(b).click()
    summary = page.visible("#why-answer .why-summary")
    assert summary.text.startswith(f"#{a} and #{b} are one person through {len(why['edges'])}")
    steps = [li.text for li in page.find_all("#why-answer ol.chain li")]
    assert len(steps) == len(why["edges"])
    for step, edge, (x, y) in zip(
        steps,
        why["edges"],
        zip(why["contactIds"], why["contactIds"][1:], strict=False),
        strict=True,
    ):
        assert step.startswith(f"#{x} and #{y}")
        assert (edge["value"] if edge["via"] != "link" else edge["link"]["email"]) in step
    # The chain is highlighted in the picture: its nodes and its edges, nothing else.
    on_path = {int(n.get_attribute("data-contact") or 0) for n in page.find_all(".node.on-path")}
    assert on_path == set(why["contactIds"])
    lit = {e.get_attribute("data-edge") for e in page.find_all("#graph .edge.on-path")}
    assert lit == {f"{min(x, y)}-{max(x, y)}" for x, y in pairs(why["edges"])}
    assert set(ids) - on_path, "a chain through every contact would prove nothing here"
    # The table's Pick buttons follow the picture's state.
    pressed = page.find_all('#contacts button.pick[aria-pressed="true"]')
    assert sorted(int(p.get_attribute("data-contact") or 0) for p in pressed) == sorted([a, b])
    page.find("#why-clear").click()
    assert page.find_all(".node.on-path") == []
    page.assert_no_console_errors()


def test_history_lists_a_merge(page: Explorer, api: Api) -> None:
    glued = glued_person(api, unique())
    history = api.ok("GET", f"/persons/{glued['primary']}/history")
    kinds = [c["kind"] for c in history["changes"]]
    assert "person.merged" in kinds
    page.open(f"#/person/{glued['primary']}")
    page.wait_rendered(glued["primary"])
    items = page.find_all("#history li.change")
    assert [i.get_attribute("data-kind") for i in items] == kinds  # oldest first, all of them
    merge = page.find('#history li[data-kind="person.merged"]')
    assert (
        f"Merged from person(s) #{glued['absorbed']} into person #{glued['primary']}" in merge.text
    )
    assert "created" in items[0].text
    page.assert_no_console_errors()


def test_an_admin_erasure_through_the_page_splits_a_glued_person(page: Explorer, api: Api) -> None:
    glued = glued_person(api, unique())
    page.open(f"#/person/{glued['primary']}", key=ADMIN_KEY)
    page.wait_rendered(glued["primary"])
    page.visible(f'button.erase-value[aria-label="Erase phone {glued["junk"]}"]').click()
    # The confirmation says what will happen, from the server's dry run: two persons remain.
    dialog = page.visible("dialog#confirm")
    page.wait(lambda d: len(dialog.find_elements(By.CSS_SELECTOR, "table.dry-run tbody tr")) == 2)
    assert glued["junk"] in dialog.text and "2 persons remain" in dialog.text
    # Nothing was written by the dry run.
    still = api.ok("POST", "/lookup", {"email": glued["eb"]})["persons"]
    assert [p["primaryContactId"] for p in still] == [glued["primary"]]
    page.find("#confirm-erase").click()
    result = page.visible("#erase-result")
    page.wait(lambda d: len(result.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2)
    assert "2 persons remain" in result.text
    shown = {
        r.find_element(By.TAG_NAME, "td").text
        for r in result.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert shown == {f"#{glued['primary']}", f"#{glued['absorbed']}"}
    # The value is gone from the person (the result panel names what was erased).
    page.wait_rendered(glued["primary"])
    for part in ("#person-summary", "#graph", "#contacts"):
        assert glued["junk"] not in page.find(part).text, part
    # The API agrees: two persons, and the junk phone is gone.
    ann = api.ok("POST", "/lookup", {"email": glued["ea"]})["persons"]
    bob = api.ok("POST", "/lookup", {"email": glued["eb"]})["persons"]
    assert [p["primaryContactId"] for p in ann] == [glued["primary"]]
    assert [p["primaryContactId"] for p in bob] == [glued["absorbed"]]
    assert api.ok("POST", "/lookup", {"phoneNumber": glued["junk"]})["persons"] == []
    # The page now shows the person without the other one, its history the split.
    assert glued["absorbed"] not in page.drawn_nodes()
    assert "split" in page.find("#history").text
    page.assert_no_console_errors()


def test_a_read_key_sees_no_erase_control_and_the_api_refuses_it(
    page: Explorer, api: Api, ui_server: Server
) -> None:
    glued = glued_person(api, unique())
    page.open(f"#/person/{glued['primary']}", key=READ_KEY)
    page.wait_rendered(glued["primary"])
    assert page.driver.execute_script("return document.body.dataset.role") == "read"
    assert not page.find("#person-erase").is_displayed()
    assert [b for b in page.find_all("button.erase-value, #erase-person") if b.is_displayed()] == []
    # Hiding a button is no protection: the API itself refuses a read key.
    for body in ({"phoneNumber": glued["junk"]}, {"personId": glued["primary"], "dryRun": True}):
        status, answer = Api(ui_server, READ_KEY).call("POST", "/erasures", body)
        assert status == 403, answer
    # And nothing was erased.
    assert len(api.ok("POST", "/lookup", {"phoneNumber": glued["junk"]})["persons"]) == 1
    page.assert_no_console_errors()


def test_a_50_contact_person_renders_every_contact(
    page: Explorer, api: Api, record_property: Any
) -> None:
    person = chain_person(api, unique(), 50)
    graph = api.ok("GET", f"/persons/{person['primary']}/graph")
    page.open(f"#/person/{person['primary']}")
    page.wait_rendered(person["primary"])
    assert len(page.drawn_nodes()) == 50
    assert page.drawn_edges() == pairs(graph["edges"])
    # Measured, never asserted (a shared CI machine): time from the route to the drawn page.
    render_ms = float(page.driver.execute_script("return document.body.dataset.renderMs"))
    record_property("first_render_ms_50_contacts", render_ms)
    print(f"first render of a 50-contact person: {render_ms:.1f} ms")
    page.assert_no_console_errors()


def test_a_person_above_the_limit_is_cut_with_a_note(page: Explorer, api: Api) -> None:
    person = chain_person(api, unique(), 205)
    graph = api.ok("GET", f"/persons/{person['primary']}/graph")
    assert graph["truncated"] is True and graph["totalContacts"] == 205
    page.open(f"#/person/{person['primary']}")
    page.wait_rendered(person["primary"])
    assert len(page.drawn_nodes()) == len(graph["contacts"]) == graph["limit"]
    note = page.visible("#graph-note").text
    assert f"This person has 205 contacts: the picture shows the {graph['limit']}" in note
    page.assert_no_console_errors()


def test_generic_values_are_flagged_on_the_person_and_listed_on_the_guards_page(
    page: Explorer, api: Api
) -> None:
    tag = unique()
    counter = f"6{int(tag, 16) % 10**8:08d}"  # a shop's counter phone: 21 shoppers use it
    first = api.identify(f"shopper0.{tag}@mall.test", counter)
    for i in range(1, 21):
        api.identify(f"shopper{i}.{tag}@mall.test", counter)
    guards = api.ok("GET", "/guards")
    assert [g["field"] for g in guards["generic"] if g["value"] == counter] == ["phoneNumber"]
    page.open(f"#/person/{first['primaryContactId']}")
    page.wait_rendered(first["primaryContactId"])
    flagged = [e.text for e in page.find_all("#person-summary .value.flagged")]
    assert flagged == [f"{counter} generic"], flagged
    assert page.find_all("#contacts .value.flagged .badge.generic")
    page.load("#/guards")
    table = page.visible("#guards table.generic-table")
    assert counter in table.text
    patterns = page.find_all("#guards ul.patterns li")
    assert patterns, "the blocked patterns are listed"
    page.assert_no_console_errors()
