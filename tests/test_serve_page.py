"""The server's web page in a real headless browser: Debian's chromium driven by selenium through
chromedriver. CI installs both (.ci/run); elsewhere the test skips without them, under CI=true
it fails instead."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.translator import Translator
from tests.serving_helpers import Server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": .ci/run installs them")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_type_a_sentence_press_translate_see_the_translation(trained_workdir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    sentence = "the red cat sees a dog"
    translator = Translator(trained_workdir.workdir)
    want = translator.translate([sentence], SearchOptions(beam_size=3, nbest=2, alpha=0.6, with_scores=True))[0]
    server = Server(trained_workdir.workdir, "--max_batch=4", cache=trained_workdir.cache).wait_ready()
    browser = _browser()
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "model"), "checkpoint step 40"))
        browser.find_element(By.ID, "source").send_keys(sentence)
        Select(browser.find_element(By.ID, "beam_size")).select_by_value("3")
        nbest = browser.find_element(By.ID, "nbest")
        nbest.clear()
        nbest.send_keys("2")
        browser.find_element(By.ID, "translate").click()
        wait.until(
            lambda b: b.find_element(By.ID, "translation").text not in ("", "…") or b.find_element(By.ID, "error").text
        )
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "translation").text == want[0].text
        assert not browser.find_element(By.ID, "target_lang").is_displayed()  # one target language: no choice
        rows = browser.find_elements(By.CSS_SELECTOR, "#candidates tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [h.text for h in want]
        assert [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows] == pytest.approx(
            [h.score for h in want], abs=1e-3
        )
        heat_rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap table tbody tr")
        assert len(heat_rows) == len(want[0].tokens) + 1  # one per output piece and </s>
        # Word confidence (on by default): a word is shaded when its probability is below the threshold.
        words = translator.translate([sentence], SearchOptions(beam_size=3, alpha=0.6, token_scores=True))[0][0].words
        probs = sorted(w.prob for w in words)
        threshold = (probs[len(probs) // 2 - 1] + probs[len(probs) // 2]) / 2 if len(probs) > 1 else 1.0
        box = browser.find_element(By.ID, "threshold")
        box.clear()
        box.send_keys(f"{threshold:.6f}")
        spans = browser.find_elements(By.CSS_SELECTOR, "#translation span")
        assert [s.text for s in spans] == [w.text for w in words]
        shaded = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#translation span.unsure")]
        assert shaded == [w.text for w in words if w.prob < threshold] and shaded
        # "split sentences" is on: a paragraph's sentences translated one by one, its blank line kept,
        # and its words shaded in place.
        paragraph = "The red cat sees a dog. A small house!\n\nThe big car."
        paragraph_opts = SearchOptions(beam_size=3, alpha=0.6, token_scores=True)
        parts = translator.translate([paragraph], paragraph_opts, split_sentences=True)[0]
        assert browser.find_element(By.ID, "split").is_selected()
        browser.find_element(By.ID, "source").clear()
        browser.find_element(By.ID, "source").send_keys(paragraph)
        nbest.clear()
        nbest.send_keys("1")
        browser.find_element(By.ID, "translate").click()
        wait.until(lambda b: b.find_element(By.ID, "translation").text not in ("", "…", want[0].text))
        assert browser.find_element(By.ID, "translation").get_property("textContent") == parts[0].text
        assert "\n\n" in parts[0].text
        spans = browser.find_elements(By.CSS_SELECTOR, "#translation span")
        assert [s.get_property("textContent") for s in spans] == [w.text for w in parts[0].words]
        browser.find_element(By.ID, "split").click()  # off: the 2000-character cap is per text again
        browser.find_element(By.ID, "source").clear()
        browser.find_element(By.ID, "source").send_keys("a" * 2001)
        browser.find_element(By.ID, "translate").click()
        wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert "at most 2000" in browser.find_element(By.ID, "error").text
    finally:
        browser.quit()
        assert server.stop() == 0, server.output


def test_a_constraint_typed_on_the_page_appears_in_the_translation(trained_workdir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    sentence, phrase = "a small house", "godtac"
    translator = Translator(trained_workdir.workdir)
    want = translator.translate([sentence], SearchOptions(beam_size=3, alpha=0.6), constraints=[[phrase]])[0][0]
    assert phrase in want.text and want.constraints_met
    args = ("--max_batch=4", "--beam_sizes=1,3", "--max_nbest=3")
    server = Server(trained_workdir.workdir, *args, cache=trained_workdir.cache).wait_ready()
    browser = _browser()
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "model"), "checkpoint step 40"))
        browser.find_element(By.ID, "source").send_keys(sentence)
        browser.find_element(By.ID, "constraints").send_keys(" " + phrase + " ; ")
        Select(browser.find_element(By.ID, "beam_size")).select_by_value("3")
        browser.find_element(By.ID, "translate").click()
        wait.until(
            lambda b: b.find_element(By.ID, "translation").text not in ("", "…") or b.find_element(By.ID, "error").text
        )
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "translation").text == want.text.strip()
    finally:
        browser.quit()
        assert server.stop() == 0, server.output


def test_a_multilingual_model_gets_a_language_selector(multilingual_workdir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    sentence = "the red cat sees a dog"
    translator = Translator(multilingual_workdir.workdir)
    want = translator.translate([sentence], SearchOptions(beam_size=1), target_lang="de")[0][0]
    args = ("--max_batch=2", "--beam_sizes=1", "--max_nbest=1", "--max_mbr=0")
    server = Server(multilingual_workdir.workdir, *args, cache=multilingual_workdir.cache).wait_ready()
    browser = _browser()
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "model"), "into fr, de, cs"))
        assert browser.find_element(By.ID, "target_lang").is_displayed()
        choices = Select(browser.find_element(By.ID, "target_lang"))
        assert [o.get_attribute("value") for o in choices.options] == ["fr", "de", "cs"]
        choices.select_by_value("de")
        browser.find_element(By.ID, "source").send_keys(sentence)
        browser.find_element(By.ID, "translate").click()
        wait.until(
            lambda b: b.find_element(By.ID, "translation").text not in ("", "…") or b.find_element(By.ID, "error").text
        )
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "translation").text == want.text.strip()
    finally:
        browser.quit()
        assert server.stop() == 0, server.output
