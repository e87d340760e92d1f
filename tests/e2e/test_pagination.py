"""End-to-end tests of paged listings (ListModels, ListDatasets, ListJobs; AIP-158): pages
of ``page_size`` in the order stored, an opaque ``next_page_token`` that is empty on the
last page, rows stored between pages neither skipped nor repeated, the default and maximum
sizes, bad sizes and tokens refused, and the client reading every page. Each test has its
own real server on 127.0.0.1, so the rows listed are exactly the ones it stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import server as F

from layerscope.client.client import Client
from layerscope.protos.stubs import analysis_pb2, datasets_pb2, models_pb2

pytestmark = pytest.mark.timeout(180)

DEFAULT_PAGE_SIZE = 100  # the documented default and maximum (docs/api.md, the .proto)
MAX_PAGE_SIZE = 1000


@pytest.fixture
def server(tmp_path: Any) -> Iterator[F.ServerProcess]:
    with F.ServerProcess(tmp_path / "data") as s:
        yield s
        assert s.alive(), s.log_tail()


@pytest.fixture
def client(server: F.ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def stubs(server: F.ServerProcess) -> Iterator[F.Stubs]:
    channel = server.channel()
    yield F.stubs(channel)
    channel.close()


def add_datasets(client: Client, n: int, start: int = 0) -> list[str]:
    """Store ``n`` distinct one-sample datasets one after the other; their ids in order."""
    return [client.upload_dataset({"x": np.full((1, 1), i, np.float32)},
                                  labels=np.zeros(1, np.int64)).id
            for i in range(start, start + n)]


def add_models(client: Client, n: int, start: int = 0) -> list[str]:
    return [client.upload_model(F.tiny_regressor(seed=i)).id for i in range(start, start + n)]


def add_jobs(client: Client, n: int, start: int = 0) -> list[str]:
    model = client.upload_model(F.tiny_regressor())
    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    train = client.upload_dataset({"x": x}, targets=x.sum(axis=1))
    return [client.start_layer_analysis(model, train, layers="act").id for _ in range(n)]


ADD = {"models": add_models, "datasets": add_datasets, "jobs": add_jobs}
LISTINGS = ["models", "datasets", "jobs"]


def list_page(stubs: F.Stubs, listing: str, page_size: int = 0, token: str = ""
              ) -> tuple[list[str], str]:
    """The ids of one page and its next_page_token, read with the raw stubs."""
    if listing == "models":
        resp = stubs.models.ListModels(
            models_pb2.ListModelsRequest(page_size=page_size, page_token=token))
        return [m.id for m in resp.models], resp.next_page_token
    if listing == "datasets":
        resp = stubs.datasets.ListDatasets(
            datasets_pb2.ListDatasetsRequest(page_size=page_size, page_token=token))
        return [d.id for d in resp.datasets], resp.next_page_token
    resp = stubs.analysis.ListJobs(
        analysis_pb2.ListJobsRequest(page_size=page_size, page_token=token))
    return [j.id for j in resp.jobs], resp.next_page_token


def read_pages(stubs: F.Stubs, listing: str, page_size: int, token: str = ""
               ) -> list[tuple[list[str], str]]:
    """(ids, next_page_token) of every page from ``token`` on."""
    pages = []
    while True:
        ids, token = list_page(stubs, listing, page_size, token)
        pages.append((ids, token))
        if not token:
            return pages


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("listing", LISTINGS)
def test_pages_of_two_give_five_items_once_each_in_order_and_the_last_token_is_empty(
        client: Client, stubs: F.Stubs, listing: str) -> None:
    ids = ADD[listing](client, 5)
    pages = read_pages(stubs, listing, page_size=2)
    assert [p for p, _ in pages] == [ids[0:2], ids[2:4], ids[4:5]]
    tokens = [t for _, t in pages]
    assert tokens[0] and tokens[1] and tokens[2] == "", tokens


def test_a_full_last_page_has_an_empty_token(client: Client, stubs: F.Stubs) -> None:
    ids = add_datasets(client, 4)
    pages = read_pages(stubs, "datasets", page_size=2)
    assert [p for p, _ in pages] == [ids[0:2], ids[2:4]]  # no empty page after it
    assert pages[0][1] and pages[1][1] == ""


@pytest.mark.parametrize("listing", LISTINGS)
def test_items_stored_between_pages_come_later_and_none_is_skipped_or_repeated(
        client: Client, stubs: F.Stubs, listing: str) -> None:
    first = ADD[listing](client, 3)
    ids, token = list_page(stubs, listing, page_size=2)
    assert ids == first[:2] and token
    later = ADD[listing](client, 2, start=10)
    rest = [i for p, _ in read_pages(stubs, listing, page_size=2, token=token) for i in p]
    assert ids + rest == first + later


def test_a_page_size_of_zero_is_the_default(client: Client, stubs: F.Stubs) -> None:
    ids = add_datasets(client, DEFAULT_PAGE_SIZE + 1)
    page, token = list_page(stubs, "datasets", page_size=0)
    assert page == ids[:DEFAULT_PAGE_SIZE] and token
    assert list_page(stubs, "datasets", page_size=0, token=token) == (ids[DEFAULT_PAGE_SIZE:], "")


def test_a_page_size_above_the_maximum_gets_the_maximum(client: Client, stubs: F.Stubs) -> None:
    ids = add_datasets(client, MAX_PAGE_SIZE + 1)
    page, token = list_page(stubs, "datasets", page_size=MAX_PAGE_SIZE * 5)
    assert page == ids[:MAX_PAGE_SIZE] and token
    assert list_page(stubs, "datasets", page_size=2**31 - 1, token=token) == (
        ids[MAX_PAGE_SIZE:], "")


# ---------------------------------------------------------------------------------------
# Bad sizes and tokens
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_negative_page_size_is_invalid_argument(stubs: F.Stubs, listing: str) -> None:
    code, details = F.code_of(lambda: list_page(stubs, listing, page_size=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in details and "-1" in details


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_malformed_page_token_is_invalid_argument(stubs: F.Stubs, listing: str) -> None:
    # not base64, base64 of no JSON, of [1, 2, 3], of ["models", "1", "a"]: none a response's
    for token in ["!!!", "garbage", "bm90IGpzb24=", "WzEsMiwzXQ==",
                  "WyJtb2RlbHMiLCAiMSIsICJhIl0="]:
        code, details = F.code_of(lambda t=token: list_page(stubs, listing, page_size=2, token=t))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (token, details)
        assert "page_token" in details, details


def test_a_token_of_another_listing_is_invalid_argument(client: Client, stubs: F.Stubs) -> None:
    add_models(client, 3)
    _, token = list_page(stubs, "models", page_size=2)
    assert list_page(stubs, "models", page_size=2, token=token)[0]  # good for ListModels
    code, details = F.code_of(lambda: list_page(stubs, "datasets", page_size=2, token=token))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details


# ---------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("listing", LISTINGS)
def test_the_client_reads_every_page_and_lists_newest_first(client: Client,
                                                             listing: str) -> None:
    ids = ADD[listing](client, 5)
    listed = getattr(client, listing)
    assert [item.id for item in listed(page_size=2)] == ids[::-1]  # three pages
    assert [item.id for item in listed()] == ids[::-1]  # the default size: one page
