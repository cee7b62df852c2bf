"""The paginators on hand-built ``httpx.Response``s (Singer's tests/core/rest/test_pagination.py shape),
the vendor strategies built on them, and the one paging loop (``Http.paginate``) over a mock wire."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from oomnitza_connector.errors import SourceError
from oomnitza_connector.http import (
    Cursor,
    Http,
    HttpError,
    LinkHeader,
    NextUrlInBody,
    OffsetLimit,
    Page,
    PageNumber,
    PageRequest,
    RepeatedToken,
    at,
    header_int,
    query_of_url,
)
from oomnitza_connector.sources.azureusers import graph_next_link
from oomnitza_connector.sources.kace import machine_pages
from oomnitza_connector.sources.merakism import meraki_links
from oomnitza_connector.sources.netbox import next_query
from oomnitza_connector.sources.tanium import AssetKeyset
from oomnitza_connector.sources.zendesk import after_cursor
from tests.test_http_retry import FakeTime, sync

URL = "https://vendor.test/api/items"
FIRST = PageRequest(URL, {"q": "x"})


def page(body: Any = None, *, headers: dict[str, str] | None = None, url: str = URL) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers, request=httpx.Request("GET", url))


def walk(paginator: Any, *responses: httpx.Response) -> list[PageRequest]:
    """The requests a paginator asks for: the first, then one after each response until it is finished."""
    asked = [paginator.request(FIRST)]
    for response in responses:
        paginator.advance(response)
        if paginator.finished:
            break
        asked.append(paginator.request(FIRST))
    return asked


# -- offset / limit ---------------------------------------------------------------------------------


def test_offset_limit_places_both_and_counts_what_arrived() -> None:
    paginator = OffsetLimit(3, items=at("data"))
    asked = walk(paginator, page({"data": [1, 2, 3]}), page({"data": [4, 5, 6]}), page({"data": [7]}))
    assert [r.params for r in asked] == [
        {"q": "x", "limit": 3, "offset": 0},
        {"q": "x", "limit": 3, "offset": 3},
        {"q": "x", "limit": 3, "offset": 6},
    ]
    assert paginator.finished  # the short page ended it


def test_offset_limit_reads_past_a_short_page_when_the_vendor_sends_fewer() -> None:
    paginator = OffsetLimit(3, items=at("data"), short_page_ends=False)
    walk(paginator, page({"data": [1, 2]}), page({"data": [3, 4]}))
    assert not paginator.finished and paginator.token == 4
    paginator.advance(page({"data": []}))
    assert paginator.finished


@pytest.mark.parametrize(
    ("body", "headers", "finished"),
    [
        ({"data": [1, 2], "meta": {"total": 5}}, {}, False),
        ({"data": [1, 2], "meta": {"total": 2}}, {}, True),
        ({"data": [1, 2], "meta": {"total": "5"}}, {}, False),  # not a number: full page, go on
        ({"data": False, "meta": {"total": 9}}, {}, True),  # Open-AudIT past the end
    ],
)
def test_offset_limit_stops_at_the_total(body: Any, headers: dict[str, str], finished: bool) -> None:
    paginator = OffsetLimit(2, items=at("data"), total=at("meta", "total"))
    paginator.advance(page(body, headers=headers))
    assert paginator.finished is finished


def test_offset_limit_total_from_a_header_and_a_has_more_flag() -> None:
    by_header = OffsetLimit(2, items=at("result"), total=header_int("x-total-count"), short_page_ends=False)
    by_header.advance(page({"result": [1]}, headers={"X-Total-Count": "3"}))
    assert not by_header.finished and by_header.token == 1
    by_header.advance(page({"result": [2, 3]}, headers={"X-Total-Count": "3"}))
    assert by_header.finished
    more = OffsetLimit(2, items=at("results"), more=at("hasMore"))
    more.advance(page({"results": [1, 2], "hasMore": True}))
    assert more.token == 2
    more.advance(page({"results": [3, 4], "hasMore": False}))
    assert more.finished


# -- page number ----------------------------------------------------------------------------------------


def test_page_number_counts_records_for_the_total() -> None:
    paginator = PageNumber(100, items=at("results"), first=0, total=at("totalCount"), size_param="page-size")
    asked = walk(
        paginator,
        page({"results": list(range(50)), "totalCount": 120}),  # the server serves 50 a page, not 100
        page({"results": list(range(50)), "totalCount": 120}),
        page({"results": list(range(20)), "totalCount": 120}),
    )
    assert [r.params["page"] for r in asked] == [0, 1, 2] and asked[0].params["page-size"] == 100
    assert paginator.finished and paginator.token == Page(2, 100)


def test_page_number_stops_on_the_last_page_flag_or_an_empty_page() -> None:
    flagged = PageNumber(2, items=at("devices"), last=at("lastPage"), page_param="pageNumber")
    flagged.advance(page({"devices": [1, 2], "lastPage": False}))
    flagged.advance(page({"devices": [3, 4], "lastPage": "true"}))
    assert flagged.finished and flagged.placed() == 2
    empty = PageNumber(2, items=at("devices"))
    empty.advance(page({"devices": []}))
    assert empty.finished


# -- cursor, Link header, next URL ---------------------------------------------------------------------


def test_cursor_sends_the_token_back_and_stops_without_one() -> None:
    paginator = Cursor(at("nextPageToken"), "pageToken")
    asked = walk(paginator, page({"nextPageToken": "abc"}), page({"nextPageToken": ""}))
    assert [r.params for r in asked] == [{"q": "x"}, {"q": "x", "pageToken": "abc"}]
    assert paginator.finished


def test_a_repeated_token_raises() -> None:
    paginator = Cursor(at("next"), "cursor")
    paginator.advance(page({"next": "same"}))
    with pytest.raises(RepeatedToken):
        paginator.advance(page({"next": "same"}))


def test_link_header_is_resolved_against_the_request() -> None:
    paginator = LinkHeader()
    paginator.advance(page([], headers={"Link": '</api/items?after=7>; rel="next", </api/items>; rel="self"'}))
    assert paginator.request(FIRST) == PageRequest("https://vendor.test/api/items?after=7", {})
    paginator.advance(page([], headers={"Link": '</api/items>; rel="self"'}))
    assert paginator.finished


def test_next_url_in_body_rebased_or_reduced_to_its_query() -> None:
    rebased = NextUrlInBody(at("next"), rebase=lambda link: link.replace("http://internal:8000", "https://vendor.test"))
    rebased.advance(page({"next": "http://internal:8000/api/items?offset=50"}))
    assert rebased.request(FIRST).url == "https://vendor.test/api/items?offset=50"
    query = NextUrlInBody(at("next"), place=query_of_url)
    query.advance(page({"next": "http://elsewhere/api/items?limit=50&offset=50"}))
    assert query.request(FIRST) == PageRequest(URL, {"limit": "50", "offset": "50"})
    query.advance(page({"next": None}))
    assert query.finished


# -- vendor strategies ------------------------------------------------------------------------------------


def test_kace_paging_is_one_parameter_with_encoded_spaces() -> None:
    paginator = machine_pages(2)
    paginator.advance(page({"Machines": [{}, {}], "Count": 3}))
    assert paginator.request(FIRST).url.endswith("&paging=limit%202%20offset%202")
    paginator.advance(page({"Machines": [{}], "Count": 3}))
    assert paginator.finished


def test_zendesk_cursor_from_meta_or_links() -> None:
    paginator = Cursor(after_cursor("[zendesk]"), "page[after]")
    paginator.advance(page({"meta": {"has_more": True, "after_cursor": "c1"}}))
    assert paginator.token == "c1"
    paginator.advance(page({"meta": {"has_more": True}, "links": {"next": "https://z/api?page%5Bafter%5D=c2"}}))
    assert paginator.token == "c2"
    paginator.advance(page({"meta": {"has_more": False, "after_cursor": "c3"}}))
    assert paginator.finished


def test_tanium_keyset_stops_when_the_next_id_does_not_move(caplog: pytest.LogCaptureFixture) -> None:
    paginator = AssetKeyset("[tanium]")
    assert paginator.request(FIRST).params["minimumAssetId"] == 1
    paginator.advance(page({"data": [{}], "meta": {"nextAssetId": 40}}))
    assert paginator.token == 40
    paginator.advance(page({"data": [{}], "meta": {"nextAssetId": 40}}))
    assert paginator.finished and "does not move past 40" in caplog.text


def test_netbox_follows_only_the_query_of_next() -> None:
    paginator = next_query("https://netbox.test", "[netbox]")
    paginator.advance(page({"next": "http://10.0.0.5/api/dcim/devices/?limit=50&offset=50"}))
    assert paginator.request(PageRequest("/api/dcim/devices/", {})) == PageRequest(
        "/api/dcim/devices/", {"limit": "50", "offset": "50"}
    )


def test_meraki_refuses_a_link_to_another_site() -> None:
    paginator = meraki_links("[merakism]", "meraki.com")
    paginator.advance(page([], headers={"Link": '<https://n12.meraki.com/api/v1/x?startingAfter=9>; rel="next"'}))
    assert paginator.token.startswith("https://n12.meraki.com/")
    with pytest.raises(SourceError, match="points to another site"):
        paginator.advance(page([], headers={"Link": '<https://evil.test/api/v1/x>; rel="next"'}))


def test_graph_next_link_is_rebased_onto_graph_host() -> None:
    paginator = graph_next_link("https://graph.test")
    paginator.advance(page({"@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=X"}))
    assert paginator.token == "https://graph.test/v1.0/users?$skiptoken=X"


# -- the loop ---------------------------------------------------------------------------------------------


def served(*bodies: Any, status: int = 200) -> tuple[Http, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = bodies[min(len(seen), len(bodies)) - 1]
        return httpx.Response(status, json=body) if body is not None else httpx.Response(204)

    time = FakeTime()
    http = Http(
        name="[test]",
        base_url="https://vendor.test",
        clock=time.clock,
        sleep=time.sleep,
        transport=httpx.MockTransport(handler),
    )
    return http, seen


@sync
async def test_the_loop_follows_the_paginator() -> None:
    http, seen = served({"data": [1, 2]}, {"data": [3, 4]}, {"data": [5]})
    pages = [r.json()["data"] async for r in http.paginate(OffsetLimit(2, items=at("data")), "/items", params={"q": 1})]
    assert pages == [[1, 2], [3, 4], [5]]
    assert [dict(r.url.params) for r in seen] == [
        {"q": "1", "limit": "2", "offset": "0"},
        {"q": "1", "limit": "2", "offset": "2"},
        {"q": "1", "limit": "2", "offset": "4"},
    ]


@sync
async def test_the_loop_stops_on_a_server_that_repeats_its_cursor() -> None:
    http, seen = served({"next": "c1"})
    with pytest.raises(HttpError, match="the server gave the same next page again"):
        async for _ in http.paginate(Cursor(at("next"), "cursor"), "/items"):
            pass
    assert len(seen) == 2


@sync
async def test_an_answer_without_a_body_ends_the_listing() -> None:
    http, seen = served({"Devices": [1], "Total": 9}, None)
    listing = http.paginate(PageNumber(1, items=at("Devices"), total=at("Total")), "/devices")
    assert [r.status_code async for r in listing] == [200, 204]
    assert len(seen) == 2


@sync
async def test_an_ok_status_that_is_not_a_page_ends_the_listing() -> None:
    http, seen = served({"error": "gone"}, status=404)
    listing = http.paginate(Cursor(at("next"), "c"), "/devices/1/apps", ok_statuses=frozenset({404}))
    assert [r.status_code async for r in listing] == [404]
    assert len(seen) == 1
