"""The web console in a real browser (headless Chromium) against the whole system, started as the end-to-end tests
start it: staff sign in through the local issuer, open a case, record consent, book a meeting and approve an
indirect item, every command going through the real services and its outcome shown from the read model; axe-core
finds no serious or critical problem on any page, in English or Welsh, on a desktop or a phone; a participant's
"Leave this page quickly" leaves for an ordinary page that Back does not return from."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from demo import samples
from services.api.console_forms import LOCAL_TIME
from services.api.principal import Role
from tests.browser.conftest import (
    DESKTOP,
    NARROWEST,
    PHONE,
    axe_problems,
    fits_the_screen,
    screenshot,
)
from tests.e2e.api_client import Staff, registered, start_with_api
from tests.harness import System

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REF = "WM/2026/810001"


async def checked(page: Any, what: str) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
    problems = await axe_problems(page)
    assert not problems, f"{what}: {problems}"


async def sign_in(page: Any, base: str, staff_id: str, role: str) -> None:
    """Through the console's sign-in and the local issuer's page, as a person does."""
    await page.goto(f"{base}/console/")
    assert "/console/sign-in" in page.url
    await checked(page, "the sign-in page")
    await page.get_by_role("link", name="Sign in").click()
    await page.wait_for_url(re.compile(r".*/authorize\?.*"))
    assert "local stand-in" in await page.content()
    await checked(page, "the local issuer's sign-in page")
    await page.get_by_label("Staff id").fill(staff_id)
    await page.get_by_label("Role").select_option(role)
    await page.get_by_label("Force").fill(samples.UPSTREAM_SOURCE)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/console/")


async def send_action(page: Any, base: str, case_id: str, command_type: str, fill: dict[str, Any]) -> str:
    """Open an action's page, fill its form (label: value; a list ticks checkboxes), send it, and wait for the
    outcome page to show accepted or rejected: the outcome's words."""
    await page.goto(f"{base}/console/cases/{case_id}/actions/{command_type}")
    for label, value in fill.items():
        control = page.get_by_label(label, exact=True)
        if await control.evaluate("e => e.tagName") == "SELECT":
            await control.select_option(value)
        else:
            await control.fill(value)
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url(re.compile(r".*/commands/.*"))
    outcome = page.locator("#outcome")
    await outcome.locator("text=/Done|Not done|Nothing changed|already handled/").wait_for(timeout=40_000)
    return str(await outcome.inner_text())


async def test_staff_sign_in_and_run_a_case_from_the_console_and_every_page_passes_axe(
    system: System, chromium: Any
) -> None:
    await start_with_api(system)
    base = system.api_url
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    context = await chromium.new_context(viewport=DESKTOP, locale="en-GB", bypass_csp=True)
    page = await context.new_page()
    try:
        await registered(coordinator, "F-ANN", "F-CAL")
        await system.publish(samples.on_crime_events(samples.crime_recorded(REF), samples.outcome_recorded(REF)))
        case_id, victim, offender = samples.case_of(REF), f"V-{REF}", f"O-{REF}"
        await coordinator.until(case_id, lambda c: c["status"] == "preparation", what="the case in preparation")

        # Sign in through the local issuer; the case is in the list.
        await sign_in(page, base, "C-1", "coordinator")
        await checked(page, "the case list")
        await screenshot(page, "console-cases-desktop")
        # By keyboard: the first Tab reaches the skip link, which takes focus to the main content.
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to main content"
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"

        # Open the case.
        await page.get_by_role("link", name=REF).click()
        await page.wait_for_url(f"{base}/console/cases/{case_id}")
        assert await page.get_by_role("heading", level=1).inner_text() == f"Case {REF}"
        assert victim in await page.content()
        await checked(page, "the case page")

        # Assign the facilitators; the outcome comes back from the consent service.
        for facilitator in ("F-ANN", "F-CAL"):
            words = await send_action(page, base, case_id, "rj.facilitator.assign", {"Facilitator id": facilitator})
            assert "Done" in words, words
        await checked(page, "an outcome page")

        # A form with a problem: the error summary links to the field, and nothing is sent.
        await page.goto(f"{base}/console/cases/{case_id}/actions/rj.consent.give")
        await page.get_by_role("button", name="Send").click()
        summary = page.locator("#error-summary")
        await summary.wait_for()
        assert await summary.get_by_role("link").first.get_attribute("href") == "#person_id"
        await checked(page, "a form with errors")

        # Preparation meetings through the API (as another facilitator's screen would), consent in the console.
        now = datetime.now(UTC).isoformat()
        for person in (victim, offender):
            met = {"person_id": person, "met_at": now, "method": "in_person"}
            assert (await ann.do(case_id, "rj.preparation-meeting.record", met))["status"] == "accepted"
        for person in (victim, offender):
            words = await send_action(page, base, case_id, "rj.consent.give", {"Person": person})
            assert "Done" in words, words
        await ann.until(case_id, lambda c: c["status"] == "ready", what="the case ready")

        # Book the conference; scheduling hears the case is ready a moment after the read model: try again.
        words = ""
        for _ in range(20):
            starts = samples.next_week().astimezone(UTC).replace(second=0, microsecond=0)
            local = starts.astimezone(LOCAL_TIME)
            words = await send_action(
                page, base, case_id, "rj.meeting.book",
                {
                    "Meeting": "M1", "Starts": local.strftime("%Y-%m-%dT%H:%M"),
                    "Ends": (local + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
                    "Lead facilitator id": "F-ANN", "Co-facilitator id (optional)": "F-CAL",
                    "Venue id (optional)": "V-HUB",
                },
            )  # fmt: skip
            if "Done" in words:
                break
            await asyncio.sleep(0.5)
        assert "Done" in words, words
        await ann.until(case_id, lambda c: [m["status"] for m in c["meetings"]] == ["booked"], what="the booking")

        # An indirect item (the offender's letter, passed on by the facilitator) waits in the approval queue.
        switch = {"person_id": offender, "form": "indirect", "reason": "He would rather write than meet"}
        assert (await ann.do(case_id, "rj.contact-form.switch", switch))["status"] == "accepted"
        letter = {"item_id": "L1", "sender_id": offender, "recipient_id": victim, "kind": "letter",
                  "content": "I am sorry for what I did."}  # fmt: skip
        assert (await ann.do(case_id, "rj.indirect.submit-item", letter))["status"] == "accepted"
        await ann.until(case_id, lambda c: [i["state"] for i in c["indirect_items"]] == ["submitted"], what="L1")
        await page.goto(f"{base}/console/indirect")
        await checked(page, "the approval queue")
        await page.get_by_role("button", name="Approve L1").click()
        await page.wait_for_url(re.compile(r".*/commands/.*"))
        await page.locator("#outcome").locator("text=/Done|Not done/").wait_for(timeout=40_000)
        assert "Done" in await page.locator("#outcome").inner_text()
        await ann.until(case_id, lambda c: [i["state"] for i in c["indirect_items"]] != ["submitted"], what="approved")

        # The case page now shows the booking, the consents and the approved letter; the deadline board opens.
        await page.goto(f"{base}/console/cases/{case_id}")
        content = await page.content()
        assert "M1" in content and "I am sorry for what I did." in content
        await checked(page, "the case page with a meeting and a letter")
        await screenshot(page, "console-case-desktop")
        await page.goto(f"{base}/console/deadlines")
        await checked(page, "the deadline board")

        # In Welsh: the switch is remembered; the page says its language.
        await page.goto(f"{base}/console/cases/{case_id}")
        await page.get_by_role("link", name="Cymraeg").click()
        await page.wait_for_url(f"{base}/console/cases/{case_id}")
        assert await page.get_attribute("html", "lang") == "cy"
        assert await page.get_by_role("heading", level=1).inner_text() == f"Achos {REF}"
        await checked(page, "the case page in Welsh")
        await page.goto(f"{base}/console/")
        assert await page.get_attribute("html", "lang") == "cy"
        await page.get_by_role("link", name="English").click()
        await page.goto(f"{base}/console/accessibility")
        assert await page.get_by_role("heading", level=1).inner_text() == (
            "Accessibility statement for the restorative justice console"
        )
        await checked(page, "the accessibility statement")

        # On a phone: nothing wider than the screen, down to 320 pixels.
        state = await context.storage_state()
        phone = await chromium.new_context(viewport=PHONE, locale="en-GB", bypass_csp=True, storage_state=state)
        small = await phone.new_page()
        for path, name in ((f"/console/cases/{case_id}", "console-case-phone"), ("/console/", "console-cases-phone")):
            await small.goto(f"{base}{path}")
            assert await fits_the_screen(small), f"{path} scrolls sideways on a phone"
            await checked(small, f"{path} on a phone")
            await screenshot(small, name)
            await small.set_viewport_size(NARROWEST)
            assert await fits_the_screen(small), f"{path} scrolls sideways at 320 px"
            await small.set_viewport_size(PHONE)
        await phone.close()

        # Signing out ends the session: the console asks to sign in again.
        await page.goto(f"{base}/console/")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(re.compile(r".*/console/sign-in\?signed_out=1"))
        await page.goto(f"{base}/console/cases/{case_id}")
        assert "/console/sign-in" in page.url
    finally:
        await context.close()
        for staff in (coordinator, ann):
            await staff.close()


async def test_the_participant_pages_quick_exit_leaves_for_an_ordinary_page_that_back_does_not_return_from(
    system: System, chromium: Any
) -> None:
    await start_with_api(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    context = await chromium.new_context(viewport=PHONE, locale="en-GB", bypass_csp=True)
    # The exit page is the BBC's weather (settings.participant_link_exit_url); the test machine has no internet.
    weather = "<!DOCTYPE html><html lang='en'><title>Weather</title><h1>Weather</h1></html>"
    await context.route(
        "https://www.bbc.co.uk/**", lambda route: route.fulfill(status=200, content_type="text/html", body=weather)
    )
    page = await context.new_page()
    try:
        await registered(coordinator, "F-ANN")
        ref = "WM/2026/810002"
        await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))
        case_id, offender = samples.case_of(ref), f"O-{ref}"
        await coordinator.until(case_id, lambda c: c["status"] == "preparation", what="the case in preparation")
        assert (await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": "F-ANN"}))["status"] == (
            "accepted"
        )
        await ann.until(case_id, lambda c: "F-ANN" in c["facilitator_ids"], what="the assignment")
        made = await ann.post(f"/cases/{case_id}/withdraw-links", json={"person_id": offender})
        assert made.status_code == 200, made.text

        await page.goto("about:blank")
        await page.goto(made.json()["url"])
        assert await page.get_by_role("heading", level=1).inner_text() == "Do you want to stop taking part?"
        await checked(page, "the participant's withdraw page")
        await screenshot(page, "participant-withdraw-phone")
        await page.get_by_role("link", name="Leave this page quickly").click()
        await page.wait_for_url("https://www.bbc.co.uk/**")
        await page.go_back()
        assert "/p/" not in page.url, "Back returned to the withdraw page"
        withdrawals = (
            "SELECT count(*) FROM api.outbox WHERE topic = 'rj.commands' "
            "AND convert_from(value, 'UTF8') LIKE '%\"rj.consent.withdraw\"%'"
        )
        assert await system.fetchval(withdrawals) == 0, "leaving withdrew nothing"
    finally:
        await context.close()
        for staff in (coordinator, ann):
            await staff.close()
