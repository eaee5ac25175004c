"""The chat UI in headless Chromium on the real default assistant: upload, ask, stream, stop, screenshot;
a ``/plugin`` call shown as a collapsible message with the picture the tool returned; Approve and Deny.

Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium; without them the test is skipped,
unless ``REQUIRE_BROWSER=1`` (as in CI), where it fails instead. The screenshot is written to
``artifacts/ui_screenshot.png``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from assistant.assistant import SHIPPED_DEFAULT

from launch_ui import ERROR_TITLE, EXAMPLES_DIR, LaunchOptions, build_app, serve

pytestmark = [pytest.mark.browser, pytest.mark.integration]
logger = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic", "--window-size=1280,1000",
)
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "ui_screenshot.png"
PLUGIN_SCREENSHOT = SCREENSHOT.with_name("ui_plugins.png")
MAX_FILE_MB = 5.0
DEFAULT_MAX_NEW_TOKENS = 256  # the UI's "Max new tokens" slider default
# With a trained default adapter shipped, the reply must contain the example's answer from
# examples/examples.json; without one (untrained connector) only a non-empty reply is checked.
CHECK_ANSWER_CONTENT = (SHIPPED_DEFAULT / "assistant_config.json").is_file()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        reason = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def served(driver):
    """The UI on the real default assistant, on a free local port; yields (url, assistant)."""
    from assistant import Assistant

    started = time.perf_counter()
    bot = Assistant.from_pretrained()
    logger.info("default assistant loaded in %.1f s: %s", time.perf_counter() - started, bot.describe())
    app = build_app(bot, max_file_mb=MAX_FILE_MB)
    serve(app, LaunchOptions(host="127.0.0.1", port=_free_port()), MAX_FILE_MB, block=False)
    yield app.local_url, bot
    app.close()


def _bot_text(driver) -> str:
    """The last assistant message as shown; "" while none is rendered."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:  # streaming re-renders the message, so an element found a moment ago may be gone
        replies = driver.find_elements(By.CSS_SELECTOR, "[data-testid='bot']")
        return replies[-1].text.strip() if replies else ""
    except StaleElementReferenceException:
        return ""


def _stop_button(driver) -> list:
    """The message box's Stop button, present only while a reply is generated."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#message button.stop-button")


def _stop_if_generating(driver, bot, tokens_before: int) -> None:
    """Press Stop (when still streaming) and check generation really ends, well before the token limit."""
    from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException

    buttons = _stop_button(driver)
    if not buttons:
        return
    try:
        buttons[0].click()
    except (StaleElementReferenceException, ElementNotInteractableException):
        if _stop_button(driver):  # a new Stop button: the reply is still streaming, so this is a real failure
            raise
        return  # the reply ended on its own between finding Stop and pressing it
    _wait_for(lambda: not _stop_button(driver), 10, "Stop to end the generation")
    tokens = bot.stats.generated_tokens
    time.sleep(1.5)  # the default model makes several tokens a second; after Stop at most one is in flight
    logger.info("stopped after %d generated tokens", bot.stats.generated_tokens - tokens_before)
    assert bot.stats.generated_tokens - tokens <= 1
    assert bot.stats.generated_tokens - tokens_before < DEFAULT_MAX_NEW_TOKENS


def test_upload_ask_stream_and_stop_in_chromium(driver, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, bot = served
    example = json.loads((EXAMPLES_DIR / "examples.json").read_text())[0]
    tokens_before = bot.stats.generated_tokens
    driver.get(url)
    textarea = _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#message textarea"), 30, "the message box")[0]

    driver.find_element(By.CSS_SELECTOR, "#message input[type=file]").send_keys(str(EXAMPLES_DIR / example["image"]))
    _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#message [aria-label='File thumbnail'] img"), 15, "the upload")
    textarea.send_keys(example["question"])
    textarea.send_keys(Keys.ENTER)

    _wait_for(lambda: _bot_text(driver), 45, "the first streamed words of the reply")
    _wait_for(lambda: len(_bot_text(driver)) >= 24 or not _stop_button(driver), 20, "the reply to grow")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOT))

    reply = _bot_text(driver)
    logger.info("streamed reply so far: %r", reply)
    assert reply and not reply.startswith(ERROR_TITLE), f"the reply is an error: {reply!r}"
    user_turns = driver.find_elements(By.CSS_SELECTOR, "[data-testid='user']")
    assert any(example["question"] in turn.text for turn in user_turns)
    assert driver.find_elements(By.CSS_SELECTOR, "[data-testid='user'] img"), "the uploaded image is shown in the chat"
    _stop_if_generating(driver, bot, tokens_before)
    if CHECK_ANSWER_CONTENT:
        _wait_for(lambda: not _stop_button(driver), 60, "the reply to finish")
        assert example["answer"] in _bot_text(driver).lower()


def test_an_uploaded_recording_is_played_in_the_chat_and_answered(driver, served, speak, tmp_path):
    from selenium.webdriver.common.by import By

    from training.data.audio_rows import write_wav

    url, bot = served
    assert "audio" in bot.supported_media, "the shipped default listens"
    recording = tmp_path / "question.wav"
    write_wav(recording, speak("How many squares are there?"))
    example = json.loads((EXAMPLES_DIR / "examples.json").read_text())[1]  # scene_2: "How many squares are there?" -> 2
    driver.get(url)
    _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#message textarea"), 30, "the message box")
    assert driver.find_elements(By.CSS_SELECTOR, "#message button[aria-label='Record audio']"), "the microphone is offered"
    upload = driver.find_element(By.CSS_SELECTOR, "#message input[type=file]")
    upload.send_keys(str(EXAMPLES_DIR / example["image"]) + "\n" + str(recording))
    _wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#message [aria-label='File thumbnail']")) >= 2 or
              driver.find_elements(By.CSS_SELECTOR, "#message audio"), 15, "both uploads")
    driver.find_element(By.CSS_SELECTOR, "#message textarea").send_keys("\n")
    player = "[data-testid='user'] [data-testid^='waveform'] button[aria-label='Play'], [data-testid='user'] audio"
    _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, player), 30, "the recording as a player in the chat")
    _wait_for(lambda: not _stop_button(driver) and _bot_text(driver), 90, "the spoken question's answer")
    reply = _bot_text(driver)
    logger.info("answer to the spoken question: %r", reply)
    assert reply and not reply.startswith(ERROR_TITLE), f"the reply is an error: {reply!r}"
    driver.save_screenshot(str(SCREENSHOT.with_name("ui_audio.png")))


def test_shipped_example_runs_offline_in_chromium(driver, served):
    from selenium.webdriver.common.by import By

    url, bot = served
    example = json.loads((EXAMPLES_DIR / "examples.json").read_text())[1]
    tokens_before = bot.stats.generated_tokens
    driver.get(url)
    xpath = f"//*[@id='chat']//button[contains(normalize-space(.), {json.dumps(example['question'])})]"
    _wait_for(lambda: driver.find_elements(By.XPATH, xpath), 30, "the example buttons")[0].click()

    _wait_for(lambda: _bot_text(driver), 45, "a reply to the example")
    reply = _bot_text(driver)
    assert not reply.startswith(ERROR_TITLE), f"the example failed: {reply!r}"
    assert driver.find_elements(By.CSS_SELECTOR, "[data-testid='user'] img"), "the example's image is shown in the chat"
    _stop_if_generating(driver, bot, tokens_before)


def _open_chat(driver, url):
    """A fresh page (a new browser session) and its message box."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    return _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#message textarea"), 30, "the message box")[0]


def _tool_message(driver, name: str):
    """The bot message whose collapsible title names the plugin ``name`` (None while there is none)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        for message in driver.find_elements(By.CSS_SELECTOR, "[data-testid='bot']"):
            titles = message.find_elements(By.CSS_SELECTOR, ".thought-group .title")
            if titles and name in titles[0].text:
                return message
    except StaleElementReferenceException:
        pass
    return None


def _has_duration(message) -> bool:
    from selenium.webdriver.common.by import By

    return bool(message.find_elements(By.CSS_SELECTOR, ".duration"))


def _finished_tool_message(driver, name: str, done=_has_duration):
    """The tool message for ``name`` once ``done(message)`` holds; None before (re-found each time: streaming re-renders)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        message = _tool_message(driver, name)
        return message if message is not None and done(message) else None
    except StaleElementReferenceException:
        return None


def _expanded_text(driver, name: str) -> str:
    """Open the tool message's collapsible part and return its text ("" while it re-renders)."""
    from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        message = _tool_message(driver, name)
        if message is None:
            return ""
        if "[1]" not in message.text and "Arguments" not in message.text:
            title = message.find_element(By.CSS_SELECTOR, ".thought-group .title")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", title)
            title.click()
        return message.text
    except (StaleElementReferenceException, ElementClickInterceptedException):  # re-rendered or still scrolling: try again
        return ""


def _finish(driver, bot, tokens_before: int) -> None:
    """Stop the reply that follows a tool result (the default is not trained to answer from tools)."""
    _stop_if_generating(driver, bot, tokens_before)
    _wait_for(lambda: not _stop_button(driver), 30, "the reply to end")


def test_plugin_command_shows_a_collapsible_call_and_the_picture_it_returned(driver, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, bot = served
    tokens_before = bot.stats.generated_tokens
    textarea = _open_chat(driver, url)
    driver.find_element(By.CSS_SELECTOR, "#message input[type=file]").send_keys(str(EXAMPLES_DIR / "scene_1.png"))
    _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#message [aria-label='File thumbnail'] img"), 15, "the upload")
    textarea.send_keys("/transform_image rotate this picture 90 degrees")
    textarea.send_keys(Keys.ENTER)

    _wait_for(lambda: _tool_message(driver, "transform_image"), 60, "the transform_image call message")
    call = _wait_for(lambda: _finished_tool_message(driver, "transform_image", _has_duration), 90, "the call to finish (its duration shown)")
    assert "error" not in call.text, f"the call failed: {call.text!r}"
    # The reply that follows streams and re-renders the messages, which can fold the call up again
    # between a click and the next look; stop it first so the expanded call stays open.
    _finish(driver, bot, tokens_before)
    text = _wait_for(lambda: (t := _expanded_text(driver, "transform_image")) and "rotated" in t and t, 30,
                     "the expanded call to show its result")  # arguments and result inside
    assert '"rotate"' in text
    pictures = _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-testid='bot'] img"), 30, "the tool's picture")
    assert pictures[0].size["width"] > 50, "the picture the tool returned is shown in the chat"
    PLUGIN_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(PLUGIN_SCREENSHOT))


def test_a_side_effecting_plugin_waits_for_approve_or_deny(driver, served, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    notes = tmp_path / "notes.md"
    monkeypatch.setenv("MMA_NOTES_FILE", str(notes))  # save_note reads it at each call
    url, bot = served
    approval = lambda: driver.find_element(By.ID, "approval").text  # noqa: E731
    for button, written in (("deny", False), ("approve", True)):
        tokens_before = bot.stats.generated_tokens
        textarea = _open_chat(driver, url)
        textarea.send_keys("/save_note Save a note: buy milk.")  # "/save_note buy milk": the default's call runs on
        textarea.send_keys(Keys.ENTER)
        logger.info("asking for save_note, then pressing %s", button)
        _wait_for(lambda: "wants to run" in approval(), 60, "the approval request")
        call = _tool_message(driver, "save_note")
        assert call is not None and "awaiting approval" in call.text
        assert not notes.exists(), "nothing is written before approval"
        driver.find_element(By.ID, button).click()
        _wait_for(lambda: "wants to run" not in approval(), 15, f"{button} to be taken")  # then the call's result
        call = _wait_for(lambda: _finished_tool_message(driver, "save_note", lambda m: "awaiting" not in m.text), 30, "the result")
        assert ("error" in call.text) != written, call.text  # the title: "save_note" or "save_note · error"
        assert notes.exists() == written
        _finish(driver, bot, tokens_before)
    assert notes.read_text().startswith("## ")  # one dated note


def test_a_generate_image_command_shows_the_drawn_picture(driver, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, bot = served
    tokens_before = bot.stats.generated_tokens
    textarea = _open_chat(driver, url)
    textarea.send_keys("/generate_image a large red circle")  # the command's text is the prompt itself (a direct call)
    textarea.send_keys(Keys.ENTER)
    # While it draws, the call's header shows its progress ("picture 1 of 1, try 1 of 3: 4/20") where a finished call
    # shows its duration; the picture appears only with the result, so wait for that before stopping the reply.
    picture = _wait_for(lambda: _drawn_picture(driver), 180, "the drawn picture")
    assert picture.size["width"] > 50, "the picture the plugin drew is shown in the chat"
    call = _wait_for(lambda: _finished_tool_message(driver, "generate_image", _has_duration), 30, "the generate_image call to finish")
    assert "error" not in call.text, f"the call failed: {call.text!r}"
    _finish(driver, bot, tokens_before)  # stop the streaming reply first: its re-renders can fold the call up again
    text = _wait_for(lambda: (t := _expanded_text(driver, "generate_image")) and "Prompt:" in t and t, 30, "the call's result")
    assert "Prompt: a large red circle" in text and "matches the prompt" in text, text


def _drawn_picture(driver):
    """The last picture shown in a bot message, or None (re-found each time: streaming re-renders)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        pictures = driver.find_elements(By.CSS_SELECTOR, "[data-testid='bot'] img")
        return pictures[-1] if pictures and pictures[-1].size["width"] > 0 else None
    except StaleElementReferenceException:
        return None


def test_a_search_knowledge_call_shows_the_retrieved_pictures(driver, served, tmp_path, monkeypatch):
    import random

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from plugins.retrieval import KnowledgeBase
    from training.data.scene_layout import generate_scene
    from training.data.scene_questions import caption
    from training.data.scene_render import scene_png
    from training.data.scenes import scene_seed

    scenes = [generate_scene(random.Random(scene_seed(7, "retrieval_check", index))) for index in range(6)]
    for index, scene in enumerate(scenes):
        (tmp_path / f"scene_{index:02d}.png").write_bytes(scene_png(scene))
    KnowledgeBase(tmp_path / "index").ingest(tmp_path, progress=False)
    monkeypatch.setenv("MMA_KNOWLEDGE_DIR", str(tmp_path / "index"))  # the plugin opens it at its first call
    url, bot = served
    tokens_before = bot.stats.generated_tokens
    textarea = _open_chat(driver, url)
    textarea.send_keys("/search_knowledge " + caption(scenes[4]))
    textarea.send_keys(Keys.ENTER)
    _wait_for(lambda: _tool_message(driver, "search_knowledge"), 90, "the search_knowledge call message")
    _wait_for(lambda: _finished_tool_message(driver, "search_knowledge", _has_duration), 60, "the search to finish")
    _finish(driver, bot, tokens_before)  # stop the streaming reply first: its re-renders can fold the call up again
    text = _wait_for(lambda: (t := _expanded_text(driver, "search_knowledge")) and "[1]" in t and t, 30, "the expanded result")
    assert text.index("[1]") < text.index("scene_04.png") < text.index("[2]"), text
    pictures = _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-testid='bot'] img"), 30, "the retrieved pictures")
    assert len(pictures) >= 2, "the retrieved pictures are shown in the chat"
