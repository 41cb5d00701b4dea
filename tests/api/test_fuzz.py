"""Fuzzing: Schemathesis against the running server's own /openapi.json, with and without
authentication, and hand-made path traversal / odd ids / odd signatures on the download route.

Each operation gets Schemathesis's stateless test, with its three phases: the schema's examples,
coverage (boundary and invalid values of every parameter, methods the path does not serve), and
fuzzing (`MAX_EXAMPLES` Hypothesis cases, positive and negative data mixed). Derandomized and seeded:
the same cases on every run, so a CI failure reproduces locally. Checks on every answer (`CHECKS`):
- not_a_server_error: no 5xx;
- status_code_conformance: the status is one the operation documents (401/404/422... included);
- content_type_conformance: the Content-Type is one documented for that status;
- response_schema_conformance: the body matches the documented schema (ErrorBody for every error);
- response_headers_conformance: documented response headers are there;
- negative_data_rejection: data the schema forbids is refused with a 4xx;
- unsupported_method, allow_header_conformance: a method the path does not serve gets 405 with an
  Allow header that lists exactly the documented methods.

Three runs: authentication off (jobs in SQLite); on (jobs in PostgreSQL), with the token on every
call, plus ignored_auth (an operation that answered 2xx is asked again without a token and with a
wrong one, and must refuse both); on, without a valid token (every secured operation refuses: 401
UNAUTHORIZED in the error format). And our own check: a 405's Allow lists the documented methods.
Not used: positive_data_acceptance (valid data is refused for reasons a schema cannot express: an
unconfigured provider, the rate limit) and the stateful checks (the schema has no OpenAPI links).

The tests are built as Schemathesis's pytest plugin builds them (`create_test`): its loader for a
schema that comes from a fixture (`schemathesis.pytest.from_fixture`) does not run under pytest 9.
"""

from __future__ import annotations

import http.client
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation import derive_operation_seed
from schemathesis.generation.hypothesis.builder import HypothesisTestConfig, HypothesisTestMode, create_test

from tests.support.jobs import local_job
from tests.support.postgres import new_database
from tests.support.server import Server

TOKEN = f"fuzz-{secrets.token_hex(16)}"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
WRONG_BEARER = {"Authorization": "Bearer not-the-token"}
#: Fuzzing-phase cases per operation (positive and negative data), besides the coverage phase's.
MAX_EXAMPLES = 50
#: POST /api/v1/generate makes real jobs (each cancelled at once, see `fuzz_operation`): a few are enough.
GENERATE_EXAMPLES = 8
#: Job creations beyond a handful a minute are refused (429, documented) rather than rendered.
SERVER_ENV = {"PROMPTREEL_RATE_LIMIT_PER_MINUTE": "5"}
#: The fuzzing sends made-up tokens by the hundred on purpose: their throttle (tests/api/test_security_limits.py) is off here.
SERVER_ENV["PROMPTREEL_AUTH_FAILURES_PER_MINUTE"] = "0"
#: Operations the fuzzing must find in /openapi.json, so a schema that lost them cannot pass.
API_OPERATIONS = {
    "GET /health",
    "POST /api/v1/generate",
    "GET /api/v1/jobs",
    "GET /api/v1/jobs/{job_id}",
    "DELETE /api/v1/jobs/{job_id}",
    "GET /api/v1/jobs/{job_id}/events",
    "GET /api/v1/status",
    "GET /api/v1/jobs/{job_id}/download/{type}",
    "HEAD /api/v1/jobs/{job_id}/download/{type}",
    "POST /api/v1/batches",
    "GET /api/v1/batches/{batch_id}",
    "DELETE /api/v1/batches/{batch_id}",
    "POST /api/v1/jobs/{job_id}/animate",
}
#: Schemathesis's statuses for a refusal of data the schema forbids (negative_data_rejection's default).
NEGATIVE_REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]
SCHEMATHESIS = {
    "seed": 6,
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    # deadline=None comes with Schemathesis's settings: a real server over HTTP, sometimes busy.
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,  # Hypothesis's derandomize
        "database": "none",
        "with-security-parameters": False,  # no made-up bearer tokens: each run sets the header itself
        "allow-extra-parameters": False,  # no unknown query parameters: ignored (as HTTP APIs do), not refused
    },
    "operations": [
        {"include-name": "POST /api/v1/generate", "generation": {"max-examples": GENERATE_EXAMPLES}},
        {
            "include-name": "POST /api/v1/batches",
            "generation": {"max-examples": GENERATE_EXAMPLES},
            # Fifty jobs with long prompts are more than PROMPTREEL_MAX_BODY_BYTES: 413, documented, refuses them too.
            "checks": {"negative_data_rejection": {"expected-statuses": [*NEGATIVE_REFUSALS, "413"]}},
        },
    ],
}


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Authentication off: every caller is the one local user. Jobs in SQLite."""
    srv = Server(tmp_path_factory.mktemp("fuzz-open") / "data", **SERVER_ENV).start()
    yield srv
    srv.stop()  # a job still rendering stops with it


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Authentication on. Jobs in PostgreSQL: the other store, with its own limits (no NUL in text)."""
    with new_database() as database_url:
        srv = Server(tmp_path_factory.mktemp("fuzz-token") / "data", API_TOKEN=TOKEN, DATABASE_URL=database_url, **SERVER_ENV)
        try:
            yield srv.start()
        finally:
            srv.stop()  # before the database is dropped


def assert_healthy(server: Server) -> None:
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


# -- the download route, by hand: traversal, odd ids, odd types, odd signatures ----------------------

#: Job ids as they go on the wire (percent-encoding kept): traversal in every spelling, NUL, unicode, length.
ODD_JOB_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e",
    "%2E%2E%2F",
    "..",
    ".",
    "../../../../../../etc/passwd",
    "..%5C..%5Cetc%5Cpasswd",
    "..\\..\\..\\etc\\passwd",
    "%252e%252e%252fetc%252fpasswd",
    "....%2F%2F....%2F%2Fetc%2F%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "job_../../x",
    "job_..%2F..%2Fx",
    "job_abcdefgh%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "..%2Fpromptreel.db",
    "..%2F..%2Fpromptreel.db",
    "%00",
    "job_abcdefgh%00",
    "%00..%2F..%2Fetc%2Fpasswd",
    "job_abcdefgh%00.png",
    "%C0%AE%C0%AE%C0%AF",
    "%E2%80%AE",
    "%F0%9F%98%80",
    "%EF%BD%8A%EF%BD%8F%EF%BD%82_abcdefgh",
    "%FF%FE",
    "%ED%A0%80",
    "%0D%0ASet-Cookie:%20x=1",
    "job_abcdefgh%0A",
    "%20",
    "%25",
    "*",
    ";",
    "job_abcdefgh;type=a",
    "job_" + "a" * 41,
    "x" * 8000,
    "job_" + "%F0%9F%98%80" * 500,
]
#: `type` values besides image and video.
ODD_TYPES = [
    "IMAGE",
    "png",
    "image.png",
    "video.mp4",
    "..",
    "%2e%2e",
    "..%2F..%2Fetc%2Fpasswd",
    "image%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "image%00",
    "image%00.png",
    "video%5C..",
    "image%20",
    "image.",
    "image;",
    "thumbnail",
    "%F0%9F%98%80",
    "t" * 5000,
]
#: `expires`/`signature` values: non-digits, unicode digits, huge numbers, empty, too long, repeated.
#: Each query names one of them, so the signature is checked (without both, the token decides).
ODD_QUERIES = [
    "expires=abc&signature=def",
    "expires=-1&signature=0",
    "expires=1e10&signature=x",
    "expires=0x10&signature=a",
    "expires=99999999999999999999&signature=" + "f" * 64,
    "expires=" + "9" * 21 + "&signature=x",
    "expires=4102444800&signature=" + "0" * 64,
    "expires=&signature=",
    "expires=1",
    "signature=abc",
    "expires=%C2%B2&signature=x",
    "expires=%EF%BC%91%EF%BC%92&signature=x",
    "expires=%D9%A3&signature=x",
    "expires=1&signature=%C3%A9",
    "expires=1&signature=%00",
    "expires=%00&signature=%00",
    "expires=1&signature=" + "a" * 200,
    "expires=%201&signature=a",
    "expires=1&expires=2&signature=a&signature=b",
    "expires=1&signature[]=a",
    "expires[]=1&signature=a",
    "expires=1&signature=%FF%FE",
    "expires=1&signature=..%2F..%2Fetc%2Fpasswd",
]
#: What no answer may contain: /etc/passwd, the SQLite job store, a PNG or an MP4 of some job.
FORBIDDEN_CONTENT = (b"root:", b"SQLite format", b"\x89PNG", b"ftyp")


def raw_request(server: Server, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send `target` exactly as written (no client-side normalising of `..` or re-encoding)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check_refused(server: Server, method: str, target: str, headers: dict[str, str]) -> list[str]:
    """The attack's answer, as problems: anything but a 4xx in the error format, or forbidden content."""
    status, body = raw_request(server, method, target, headers)
    where = f"{method} {target[:120]} ({'token' if headers == BEARER else 'no valid token'}) -> {status}"
    problems = []
    if not 400 <= status < 500:
        problems.append(f"{where}: not a 4xx: {body[:200]!r}")
    problems += [f"{where}: the answer holds {marker!r}" for marker in FORBIDDEN_CONTENT if marker in body]
    if method == "GET":
        try:
            error = httpx.Response(status, content=body).json()
            assert set(error) == {"error", "code", "details"}, error
            assert isinstance(error["error"], str) and isinstance(error["code"], str) and isinstance(error["details"], dict)
        except Exception as problem:
            problems.append(f"{where}: not the error format ({problem}): {body[:200]!r}")
    return problems


def wait_for_image(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the image step's end is an event; a plain REST poll is simpler here
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        if job["image_url"]:
            return job
        assert job["status"] not in ("failed", "cancelled", "completed"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} made no image in {timeout}s")


def attacks(job_id: str) -> list[tuple[str, str]]:
    """(method, target) of every attack on the download route; `job_id` is a real job's (or a well-formed) id."""
    base = "/api/v1/jobs"
    ids = [
        *ODD_JOB_IDS,
        f"{job_id}%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"{job_id}%2F..%2F..%2Fpromptreel.db",
        f"..%2F{job_id}",
        f"{job_id}%2Fimage.png",
        f"{job_id}%00",
        f"{job_id}%2F..%2F{job_id}",
        f"{job_id}/../{job_id}",
        f"{job_id}%5C..%5C{job_id}",
    ]
    targets = [("GET", f"{base}/{odd}/download/{kind}") for odd in ids for kind in ("image", "video")]
    targets += [("HEAD", f"{base}/{odd}/download/image") for odd in ids]
    targets += [("GET", f"{base}/{job_id}/download/{odd}") for odd in ODD_TYPES]
    targets += [
        ("GET", f"{base}/{odd_id}/download/image?{query}") for query in ODD_QUERIES for odd_id in (job_id, ODD_JOB_IDS[0])
    ]
    targets += [("HEAD", f"{base}/{job_id}/download/video?{query}") for query in ODD_QUERIES]
    return targets


def test_the_download_route_refuses_traversal_odd_ids_and_odd_signatures(open_server: Server, token_server: Server):
    # A real job with a real image on each server: traversal from its id, and its signed link altered.
    with open_server.client() as open_api, token_server.client() as token_api:
        token_api.headers.update(BEARER)
        created = [
            (api, api.post("/api/v1/generate", json=local_job("fuzzing target")).json()["id"]) for api in (open_api, token_api)
        ]
        jobs = [wait_for_image(api, job_id) for api, job_id in created]  # both render side by side
    for job in jobs:  # the signed link alone, no token: the route works, so the refusals below mean something
        assert httpx.get(job["image_url"], timeout=30).content.startswith(b"\x89PNG")

    problems: list[str] = []
    # Authentication off ignores the header: the open server is asked without one.
    for server, job, header_sets in ((open_server, jobs[0], [{}]), (token_server, jobs[1], [{}, BEARER, WRONG_BEARER])):
        for headers in header_sets:
            for method, target in attacks(job["id"]):
                problems += check_refused(server, method, target, headers)
        path, query = httpx.URL(job["image_url"]).raw_path.decode().split("?")
        tampered = [
            f"{path}/..%2F..%2F..%2Fetc%2Fpasswd?{query}",
            f"{path}%2F..%2F..%2F..%2Fetc%2Fpasswd?{query}",
            path.replace("/image", "/video") + f"?{query}",
            path.replace(job["id"], "job_abcdefgh1234") + f"?{query}",
            path.replace(job["id"], f"{job['id']}%2F..%2F{job['id']}") + f"?{query}",
            f"{path}?{query}0",
            f"{path}?{query[:-1]}",
            f"{path}?{query.replace('expires=', 'expires=1')}",
        ]
        for target in tampered:
            problems += check_refused(server, "GET", target, {})
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problem[:300] for problem in problems[:40])
    assert_healthy(open_server)
    assert_healthy(token_server)


def test_nul_characters_are_refused_before_the_store(token_server: Server):
    """PostgreSQL refuses NUL in text: an id, a search or a prompt with one must not get that far."""
    with token_server.client() as api:
        api.headers.update(BEARER)
        assert api.get("/api/v1/jobs", params={"q": "a\x00b"}).json() == []
        for method in ("GET", "DELETE"):
            assert api.request(method, "/api/v1/jobs/job_abc%00defgh").json()["code"] == "JOB_NOT_FOUND"
        assert api.get("/api/v1/jobs/%00/events").json()["code"] == "JOB_NOT_FOUND"
        refused = api.post("/api/v1/generate", json=local_job("a majestic \x00 mountain"))
        assert (refused.status_code, refused.json()["details"]["field"]) == (422, "prompt")
    assert_healthy(token_server)


# -- Schemathesis: every operation, both generation modes ---------------------------------------------


def load_schema(server: Server) -> schemathesis.BaseSchema:
    config = SchemathesisConfig.from_dict(SCHEMATHESIS)
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config, timeout=30)


def is_secured(schema: schemathesis.BaseSchema, label: str) -> bool:
    method, path = label.split(" ", 1)
    return bool(schema.raw_schema["paths"][path][method.lower()].get("security"))


Prepare = Callable[[Case], None]
Inspect = Callable[[Case, schemathesis.Response], None]


def fuzz(
    schema: schemathesis.BaseSchema,
    *,
    headers: dict[str, str] | None = None,
    extra_checks: tuple = (),
    prepare: Prepare | None = None,
    inspect: Inspect | None = None,
) -> list[str]:
    """Test every operation of `schema` with `headers` on every call; the failures, one text each."""
    failures: list[str] = []
    seen: set[str] = set()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                failures.append(f"the schema does not define an operation properly: {result.err()}")
                continue
            operation = result.ok()
            seen.add(operation.label)
            failures += fuzz_operation(operation, session, headers, [*CHECKS, *extra_checks], prepare, inspect)
    if missing := API_OPERATIONS - seen:
        failures.append(f"operations missing from /openapi.json: {sorted(missing)}")
    return failures


def check_allow_header(case: Case, response: schemathesis.Response) -> None:
    """A method the path does not serve: Allow names exactly the documented ones. (Schemathesis's
    allow_header_conformance lets an empty Allow pass.)"""
    documented = {method.upper() for method in case.operation.schema.raw_schema["paths"][case.operation.path]}
    if response.request.method not in documented:  # else a path parameter with a "/" reached another route
        allowed = {method.strip() for value in response.headers.get("allow", []) for method in value.split(",") if method.strip()}
        assert allowed == documented, (
            f"{response.request.method} {response.request.path_url}: Allow {allowed}, documented {documented}"
        )


def fuzz_operation(
    operation: schemathesis.APIOperation,
    session: requests.Session,
    headers: dict[str, str] | None,
    checks: list,
    prepare: Prepare | None,
    inspect: Inspect | None,
) -> list[str]:
    def one_case(case: Case) -> None:
        if prepare:
            prepare(case)
        response = case.call_and_validate(session=session, headers=headers, checks=checks, timeout=30)
        if operation.label == "POST /api/v1/generate" and response.status_code == 201:
            # The job would render on the CPU the fuzzing needs too: cancel it at once (a real DELETE: 200).
            url = f"{operation.base_url.rstrip('/')}/api/v1/jobs/{response.json()['id']}"
            assert session.delete(url, headers=headers, timeout=30).status_code in (200, 409)
        if operation.label == "POST /api/v1/batches" and response.status_code == 201:
            url = f"{operation.base_url.rstrip('/')}/api/v1/batches/{response.json()['id']}"
            assert session.delete(url, headers=headers, timeout=30).status_code == 200
        if response.status_code == 405:
            check_allow_header(case, response)
        if inspect:
            inspect(case, response)

    # As the pytest plugin builds an operation's test (schemathesis.pytest._test_builder), all three phases.
    config = operation.schema.config
    test = create_test(
        operation=operation,
        test_func=one_case,
        config=HypothesisTestConfig(
            project=config,
            modes=[HypothesisTestMode.EXAMPLES, HypothesisTestMode.COVERAGE, HypothesisTestMode.FUZZING],
            settings=config.get_hypothesis_settings(operation=operation, phase="fuzzing"),
            seed=derive_operation_seed(config.seed, operation.label),
        ),
    )
    try:
        test()
    except (Exception, FailureGroup) as error:  # FailureGroup is a BaseExceptionGroup
        return [f"{operation.label}:\n{error}"]
    return []


def report(failures: list[str]) -> str:
    return f"{len(failures)} failing operation(s)/mode(s):\n\n" + "\n\n".join(failures)


def test_fuzz_without_authentication(open_server: Server):
    failures = fuzz(load_schema(open_server))
    assert not failures, report(failures)
    assert_healthy(open_server)


def test_fuzz_with_the_token(token_server: Server):
    failures = fuzz(load_schema(token_server), headers=BEARER, extra_checks=(ignored_auth,))
    assert not failures, report(failures)
    assert_healthy(token_server)


#: Where a request without a valid token may end before the token is looked at, and the code it gets.
REFUSALS_BEFORE_AUTH = {
    400: "BAD_REQUEST",  # a body that cannot be decoded
    403: "SIGNATURE_INVALID",  # a download with a (bad) signature: the signature is checked instead
    404: "NOT_FOUND",  # a path parameter with a "/" that matches no route at all
    405: "METHOD_NOT_ALLOWED",  # ... or another route's path
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",  # a body that is not JSON, a download's bad type or query
}


def test_fuzz_with_authentication_on_but_no_token(token_server: Server):
    """Authentication on, no token (every other case) or a made-up one (the others): every secured
    operation refuses, with a documented 401 in the error format, never a 2xx/3xx."""
    schema = load_schema(token_server)
    counter = itertools.count()
    unauthorized: Counter[str] = Counter()
    problems: list[str] = []

    def made_up_token_every_other_case(case: Case) -> None:
        if next(counter) % 2:
            case.headers = {**(case.headers or {}), **WRONG_BEARER}

    def refused(case: Case, response: schemathesis.Response) -> None:
        label = case.operation.label
        if not is_secured(schema, label):
            return
        status = response.status_code
        where = f"{case.method} {response.request.path_url[:120]} -> {status}"
        if status < 400:
            problems.append(f"{where}: answered without a valid token")
            return
        unauthorized[label] += status == 401
        if case.method == "HEAD":  # no body to read
            return
        code = response.json()["code"]  # the format itself is response_schema_conformance's
        if (status == 401 and code != "UNAUTHORIZED") or (status != 401 and REFUSALS_BEFORE_AUTH.get(status) != code):
            problems.append(f"{where}: {code}")

    failures = fuzz(schema, prepare=made_up_token_every_other_case, inspect=refused)
    assert not failures, report(failures)
    assert not problems, "\n".join(problems[:20])
    secured = {label for label in API_OPERATIONS if is_secured(schema, label)}
    assert secured == API_OPERATIONS - {"GET /health"}
    assert {label: unauthorized[label] for label in secured if not unauthorized[label]} == {}, (
        "secured operations that never answered 401"
    )
    assert_healthy(token_server)
