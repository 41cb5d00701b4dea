"""`promptreel --native` under Xvfb: the desktop window opens, shows the studio, and closes cleanly.

pywebview with the Qt backend (PyQt6-WebEngine) draws the studio in a real X window; the test
looks at that window through X11 itself (libX11 via ctypes: find it by name, close it as a
window manager would) and at the screen through Pillow's ImageGrab.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    byref,
    c_char_p,
    c_int,
    c_long,
    c_uint,
    c_ulong,
    c_void_p,
)
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.sync.client import connect

from tests.fakes.fake_comfyui import FakeComfyUI
from tests.support.server import ROOT, clean_env, free_port, wait_until_answers

pytestmark = pytest.mark.native

WINDOW_TITLE = "promptreel studio"  # the studio page's <title>; pywebview names the window after it once loaded
START_TIMEOUT = 90.0
EXIT_TIMEOUT = 30.0


class _ClientMessage(Structure):
    _fields_ = [
        ("type", c_int),
        ("serial", c_ulong),
        ("send_event", c_int),
        ("display", c_void_p),
        ("window", c_ulong),
        ("message_type", c_ulong),
        ("format", c_int),
        ("l", c_long * 5),
    ]


class _XEvent(Union):
    _fields_ = [("xclient", _ClientMessage), ("pad", c_long * 24)]


#: Xlib's error handler type: int handler(Display *, XErrorEvent *).
_XErrorHandler = CFUNCTYPE(c_int, c_void_p, c_void_p)
#: Windows come and go while Qt starts: asking about one that has just gone is a BadWindow error, and
#: Xlib's default handler then calls exit(1), taking pytest along, silently. This one lets the call
#: fail instead (XQueryTree / XFetchName return 0, and the window is skipped). Module-level: Xlib
#: keeps calling it for the life of the process.
_IGNORE_X_ERRORS = _XErrorHandler(lambda display, error: 0)


class X11:
    """The few Xlib calls the test needs: list named windows, ask one to close (WM_DELETE_WINDOW)."""

    def __init__(self, display: str):
        lib = ctypes.cdll.LoadLibrary("libX11.so.6")
        lib.XOpenDisplay.restype, lib.XOpenDisplay.argtypes = c_void_p, [c_char_p]
        lib.XDefaultRootWindow.restype, lib.XDefaultRootWindow.argtypes = c_ulong, [c_void_p]
        lib.XInternAtom.restype, lib.XInternAtom.argtypes = c_ulong, [c_void_p, c_char_p, c_int]
        lib.XQueryTree.argtypes = [
            c_void_p,
            c_ulong,
            POINTER(c_ulong),
            POINTER(c_ulong),
            POINTER(POINTER(c_ulong)),
            POINTER(c_uint),
        ]
        lib.XFetchName.argtypes = [c_void_p, c_ulong, POINTER(c_char_p)]
        lib.XFree.argtypes = [c_void_p]
        lib.XSendEvent.argtypes = [c_void_p, c_ulong, c_int, c_long, c_void_p]
        lib.XFlush.argtypes = lib.XCloseDisplay.argtypes = [c_void_p]
        lib.XSetErrorHandler.restype, lib.XSetErrorHandler.argtypes = c_void_p, [_XErrorHandler]
        lib.XSetErrorHandler(_IGNORE_X_ERRORS)
        self.lib = lib
        self.display = lib.XOpenDisplay(display.encode())
        assert self.display, f"cannot open X display {display}"

    def close(self) -> None:
        self.lib.XCloseDisplay(self.display)

    def windows(self, window: int | None = None) -> list[tuple[int, str]]:
        lib = self.lib
        window = lib.XDefaultRootWindow(self.display) if window is None else window
        root, parent, children, count = c_ulong(), c_ulong(), POINTER(c_ulong)(), c_uint()
        if not lib.XQueryTree(self.display, window, byref(root), byref(parent), byref(children), byref(count)):
            return []
        ids = [children[index] for index in range(count.value)]
        if count.value:
            lib.XFree(children)
        found: list[tuple[int, str]] = []
        for child in ids:
            name = c_char_p()
            if lib.XFetchName(self.display, child, byref(name)) and name.value is not None:
                found.append((child, name.value.decode(errors="replace")))
            found.extend(self.windows(child))
        return found

    def window(self, title: str) -> int | None:
        return next((window for window, name in self.windows() if name == title), None)

    def ask_to_close(self, window: int) -> None:
        """What a window manager sends when the user clicks the close button."""
        event = _XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = window
        event.xclient.message_type = self.lib.XInternAtom(self.display, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.l[0] = self.lib.XInternAtom(self.display, b"WM_DELETE_WINDOW", 0)
        assert self.lib.XSendEvent(self.display, window, 0, 0, byref(event))
        self.lib.XFlush(self.display)


@pytest.fixture
def xvfb() -> Iterator[str]:
    # Missing parts fail, not skip: scripts/test installs them, so a skip would hide a broken set-up.
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed (scripts/test installs it)")
    if importlib.util.find_spec("webview") is None:
        pytest.fail("the native extra is not installed (scripts/test installs it: pip install -e .[native])")
    read_end, write_end = os.pipe()
    # -displayfd: Xvfb picks a free display and writes its number once it accepts clients.
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    assert number.isdigit(), "Xvfb did not start"
    yield f":{number}"
    process.terminate()
    process.wait(timeout=10)


class NativeApp:
    def __init__(self, display: str, data_dir: Path, **extra_env: str):
        self.display = display
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "native.log"
        env = clean_env(
            data_dir,
            DISPLAY=display,
            QT_QPA_PLATFORM="xcb",
            QTWEBENGINE_CHROMIUM_FLAGS="--no-sandbox",
            PYWEBVIEW_GUI="qt",
            **extra_env,
        )
        env.pop("WAYLAND_DISPLAY", None)
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "--native", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.x11 = X11(display)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_window(self) -> int:
        """The window exists, has loaded the studio page (its title), and has drawn it."""
        deadline = time.monotonic() + START_TIMEOUT
        window = None
        while time.monotonic() < deadline:  # an X server has no event to await from outside: poll
            assert self.process.poll() is None, f"promptreel --native exited:\n{self.output()}"
            window = self.x11.window(WINDOW_TITLE)
            if window is not None and studio_drawn(self.screenshot()):
                return window
            time.sleep(0.25)
        raise AssertionError(
            f"no studio window in {START_TIMEOUT}s (window {window}); windows {self.x11.windows()}\n{self.output()}"
        )

    def wait_for_server(self) -> None:
        """The app's server answers (the same studio its window shows, for a browser to drive)."""
        wait_until_answers(f"{self.url}/health", self.process, self.log_path, "promptreel --native")

    def screenshot(self):
        from PIL import ImageGrab

        return ImageGrab.grab(xdisplay=self.display)

    def wait_for_exit(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"promptreel --native did not exit within {EXIT_TIMEOUT}s:\n{self.output()}") from None

    def leftovers(self) -> list[str]:
        """Processes of this app's session still alive (the window process, Qt's helpers)."""
        result = subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "-s", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        # zombies are dead already: only a parent (or init) reaping them is missing
        return [line for line in result.stdout.splitlines() if line.split() and not line.split()[1].startswith("Z")]

    def stop(self) -> None:
        """Whatever the test did, leave nothing of this session running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.x11.close()
        self.log.close()


def studio_drawn(image) -> bool:
    """Not blank, and the studio's violet (buttons, toggles, logo) is on screen: Vue and Quasar rendered it."""
    from PIL import ImageStat

    if max(ImageStat.Stat(image.convert("L")).stddev) < 20:
        return False
    import numpy as np

    pixels = np.asarray(image.convert("RGB").resize((320, 225)), dtype=np.int16)
    violet = (np.abs(pixels - np.array([124, 58, 237])) < 30).all(axis=2).sum()
    return int(violet) > 150


@pytest.fixture
def native_app(xvfb: str, tmp_path: Path) -> Iterator[NativeApp]:
    application = NativeApp(xvfb, tmp_path / "data")
    yield application
    application.stop()


def check_rendered(application: NativeApp, name: str) -> None:
    image = application.screenshot()
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    image.save(artifacts / f"{name}.png")
    assert studio_drawn(image)
    output = application.output()
    assert "Vue failed to load" not in output, output
    assert "Traceback" not in output, output


def test_native_window_shows_the_studio_and_closes_with_the_window(native_app: NativeApp):
    window = native_app.wait_for_window()
    check_rendered(native_app, "native-window")
    native_app.x11.ask_to_close(window)  # the user clicks the window's close button
    assert native_app.wait_for_exit() == 0, native_app.output()
    assert native_app.x11.window(WINDOW_TITLE) is None
    assert not native_app.leftovers(), native_app.leftovers()


def test_native_app_stops_on_sigterm_and_takes_its_window_along(native_app: NativeApp):
    native_app.wait_for_window()
    native_app.process.send_signal(signal.SIGTERM)  # `kill`, a session logout; Ctrl+C (SIGINT) takes the same path
    # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM is the normal end
    assert native_app.wait_for_exit() in (0, -signal.SIGTERM), native_app.output()
    deadline = time.monotonic() + EXIT_TIMEOUT
    while native_app.leftovers() and time.monotonic() < deadline:  # the window process follows its parent
        time.sleep(0.2)
    assert not native_app.leftovers(), native_app.leftovers()
    assert native_app.x11.window(WINDOW_TITLE) is None


# -- the offer of a ComfyUI found on this machine (backend/providers/comfyui/discovery.py) ------------------

OFFER = "ComfyUI found on this machine: use it?"


@pytest.fixture
def comfyui() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as fake:
        yield fake


def studio_page(browser: Browser, application: NativeApp) -> Page:
    """The studio the window shows, opened in Chromium against the app's own server."""
    application.wait_for_server()
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(application.url + "/")
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    page.wait_for_function("() => window.did_handshake === true")
    return page


def status(application: NativeApp) -> dict:
    return httpx.get(f"{application.url}/api/v1/status", timeout=30).json()


@pytest.mark.browser
def test_native_offers_the_comfyui_found_on_this_machine_and_using_it_runs_a_job_there(
    xvfb: str, tmp_path: Path, browser: Browser, comfyui: FakeComfyUI
):
    application = NativeApp(xvfb, tmp_path / "data", PROMPTREEL_COMFYUI_PROBE_URL=comfyui.url)
    try:
        page = studio_page(browser, application)
        offer = page.get_by_test_id("comfyui-offer")
        expect(offer).to_contain_text(OFFER)
        expect(offer).to_contain_text(comfyui.url)
        assert status(application).get("comfyui_available") is not True  # offered, not used yet
        assert comfyui.seen("GET", "/system_stats")  # the probe asked ComfyUI's own health route
        page.screenshot(path=str(ROOT / "test-artifacts" / "native-comfyui-offer.png"))

        page.get_by_test_id("comfyui-accept").click()
        expect(offer).to_contain_text("ComfyUI is on for this session")
        expect(offer).to_contain_text(f"COMFYUI_URL={comfyui.url}")
        expect(page.get_by_test_id("comfyui-accept")).to_be_hidden()
        expect(page.locator("header")).to_contain_text(re.compile("comfyui", re.IGNORECASE))  # the header lists it at once
        assert status(application)["comfyui_available"] is True

        with connect(f"ws://127.0.0.1:{application.port}/ws", max_size=None) as socket:
            body = {"prompt": "a lighthouse, on the GPU next door", "provider": "comfyui", "settings": {"videoProvider": "local"}}
            created = httpx.post(f"{application.url}/api/v1/generate", json=body, timeout=30)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            while True:
                event = json.loads(socket.recv(timeout=120))
                if event.get("jobId") == job_id and event["type"] in ("job_completed", "job_failed"):
                    break
        assert event["type"] == "job_completed", event
        assert len(comfyui.seen("POST", "/prompt")) == 1  # the image was ComfyUI's
        page.reload()  # taken up: not offered again
        expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
        expect(page.get_by_test_id("comfyui-offer")).to_have_count(0)
    finally:
        application.stop()


@pytest.mark.browser
def test_native_hides_the_comfyui_offer_once_declined(xvfb: str, tmp_path: Path, browser: Browser, comfyui: FakeComfyUI):
    application = NativeApp(xvfb, tmp_path / "data", PROMPTREEL_COMFYUI_PROBE_URL=comfyui.url)
    try:
        page = studio_page(browser, application)
        expect(page.get_by_test_id("comfyui-offer")).to_contain_text(OFFER)
        page.get_by_test_id("comfyui-decline").click()
        expect(page.get_by_test_id("comfyui-offer")).to_be_hidden()
        page.reload()  # for the rest of this run of the app
        expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
        expect(page.get_by_test_id("comfyui-offer")).to_have_count(0)
        assert status(application).get("comfyui_available") is not True
    finally:
        application.stop()


@pytest.mark.browser
@pytest.mark.parametrize("case", ["nothing answers", "COMFYUI_URL is set"])
def test_native_offers_no_comfyui_when_none_answers_or_one_is_configured(
    xvfb: str, tmp_path: Path, browser: Browser, comfyui: FakeComfyUI, case: str
):
    if case == "nothing answers":
        env = {"PROMPTREEL_COMFYUI_PROBE_URL": f"http://127.0.0.1:{free_port()}"}
    else:
        env = {"PROMPTREEL_COMFYUI_PROBE_URL": comfyui.url, "COMFYUI_URL": comfyui.url}
    application = NativeApp(xvfb, tmp_path / "data", **env)
    try:
        page = studio_page(browser, application)  # the page waits for the start-up probe's answer
        expect(page.get_by_test_id("comfyui-offer")).to_have_count(0)
        if case == "COMFYUI_URL is set":
            assert status(application)["comfyui_available"] is True
    finally:
        application.stop()
