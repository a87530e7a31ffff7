"""Every word the web console shows, in English and Welsh side by side (as ``participant_text`` does for the
participants' pages), so that a translator reviews one file and a test holds the two languages to the same keys.

The Welsh was written by the development team and has NOT yet been reviewed by a Welsh translator
(``WELSH_REVIEWED``); the console says so on every Welsh page. Codes the services use (a status, a role, a command
type) are shown through ``CODES`` where a translation exists, and as the code itself where none does, so a new code
is never hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LANGUAGES = ("en", "cy")
WELSH_REVIEWED = False
"""Set to True once a Welsh translator has reviewed every entry below."""

MESSAGES: dict[str, tuple[str, str]] = {
    # --- every page
    "service": ("Restorative justice console", "Consol cyfiawnder adferol"),
    "skip": ("Skip to main content", "Neidio i'r prif gynnwys"),
    "nav.label": ("Console", "Consol"),
    "nav.cases": ("Cases", "Achosion"),
    "nav.deadlines": ("Deadlines", "Terfynau amser"),
    "nav.indirect": ("Items to approve", "Eitemau i'w cymeradwyo"),
    "nav.figures": ("Figures", "Ffigurau"),
    "signed_in_as": ("Signed in as {who} ({role})", "Wedi mewngofnodi fel {who} ({role})"),
    "sign_out": ("Sign out", "Allgofnodi"),
    "switch_language": ("Cymraeg", "English"),
    "footer.accessibility": ("Accessibility statement", "Datganiad hygyrchedd"),
    "footer.welsh_review": (
        "",
        "Nid yw cyfieithydd wedi adolygu'r testun Cymraeg hwn eto.",
    ),
    "error_prefix": ("Error", "Gwall"),
    "problem": ("There is a problem", "Mae problem"),
    "yes": ("Yes", "Ydy"),
    "no": ("No", "Nac ydy"),
    "any": ("Any", "Unrhyw un"),
    "none": ("None", "Dim"),
    "optional": ("(optional)", "(dewisol)"),
    "hidden": ("Hidden", "Cudd"),
    "erased": ("Erased", "Wedi'i ddileu"),
    "back_to_case": ("Back to the case", "Yn ôl i'r achos"),
    # --- signing in and out
    "sign_in.title": ("Sign in", "Mewngofnodi"),
    "sign_in.intro": (
        "Sign in with your force's account to work on restorative justice cases.",
        "Mewngofnodwch gyda chyfrif eich heddlu i weithio ar achosion cyfiawnder adferol.",
    ),
    "sign_in.button": ("Sign in", "Mewngofnodi"),
    "sign_in.signed_out": ("You have signed out.", "Rydych wedi allgofnodi."),
    "sign_in.expired": (
        "Your session has ended. Sign in again to carry on.",
        "Mae eich sesiwn wedi dod i ben. Mewngofnodwch eto i barhau.",
    ),
    "sign_in.failed": (
        "Signing in did not work. Try again.",
        "Ni weithiodd y mewngofnodi. Rhowch gynnig arall arni.",
    ),
    "sign_in.unavailable": (
        "The sign-in service cannot be reached. Try again shortly.",
        "Does dim modd cyrraedd y gwasanaeth mewngofnodi. Rhowch gynnig arall arni cyn bo hir.",
    ),
    "csrf.title": ("Your form could not be sent", "Nid oedd modd anfon eich ffurflen"),
    "csrf.body": (
        "The page was too old, or was not sent from this console. Go back, reload the page and try again.",
        "Roedd y dudalen yn rhy hen, neu ni chafodd ei hanfon o'r consol hwn. Ewch yn ôl, ail-lwythwch y dudalen a "
        "rhowch gynnig arall arni.",
    ),
    # --- the case list
    "cases.title": ("Cases", "Achosion"),
    "cases.filters": ("Filter cases", "Hidlo achosion"),
    "cases.status": ("Status", "Statws"),
    "cases.facilitator": ("Facilitator id", "Rhif adnabod yr hwylusydd"),
    "cases.sensitive": ("Sensitive", "Sensitif"),
    "cases.overdue": ("Only cases with a deadline missed", "Dim ond achosion gyda therfyn amser wedi'i fethu"),
    "cases.apply": ("Apply filters", "Hidlo"),
    "cases.clear": ("Clear filters", "Clirio'r hidlwyr"),
    "cases.none": ("No cases match.", "Does dim achosion yn cyfateb."),
    "cases.case": ("Case", "Achos"),
    "cases.crime_reference": ("Crime reference", "Cyfeirnod trosedd"),
    "cases.on_hold": ("On hold", "Wedi'i atal"),
    "cases.facilitators": ("Facilitators", "Hwyluswyr"),
    "cases.updated": ("Last change", "Newid diwethaf"),
    "cases.next": ("Next page", "Tudalen nesaf"),
    "cases.caption": ("Cases, most recently changed first", "Achosion, y rhai a newidiwyd ddiwethaf yn gyntaf"),
    # --- one case
    "case.title": ("Case {ref}", "Achos {ref}"),
    "case.summary": ("Summary", "Crynodeb"),
    "case.offence": ("Offence", "Trosedd"),
    "case.sensitivity": ("Why it is sensitive", "Pam ei fod yn sensitif"),
    "case.risk": ("Risk assessment", "Asesiad risg"),
    "case.risk_none": ("Not recorded", "Heb ei gofnodi"),
    "case.risk_value": (
        "{level}; safe to proceed: {safe} ({when})",
        "{level}; diogel i fwrw ymlaen: {safe} ({when})",
    ),
    "case.hold": ("Hold", "Ataliad"),
    "case.hold_on": ("On hold since {since}", "Wedi'i atal ers {since}"),
    "case.hold_off": ("Not on hold", "Heb ei atal"),
    "case.concern": ("Concern", "Pryder"),
    "case.contact_form": ("Form of contact", "Math o gyswllt"),
    "case.closure": ("Closed", "Wedi cau"),
    "case.actions": ("Actions", "Camau gweithredu"),
    "case.no_actions": ("Your role sends no commands.", "Nid yw eich rôl yn anfon gorchmynion."),
    "case.participants": ("Participants and roles", "Cyfranogwyr a rolau"),
    "case.person": ("Person", "Person"),
    "case.name": ("Name", "Enw"),
    "case.role": ("Role", "Rôl"),
    "case.required": ("Consent needed", "Angen caniatâd"),
    "case.consent": ("Consent", "Caniatâd"),
    "case.consents": ("Consent decisions", "Penderfyniadau caniatâd"),
    "case.purpose": ("Purpose", "Diben"),
    "case.decision": ("Decision", "Penderfyniad"),
    "case.when": ("When", "Pryd"),
    "case.through": ("Through", "Drwy"),
    "case.meetings": ("Meetings", "Cyfarfodydd"),
    "case.meeting": ("Meeting", "Cyfarfod"),
    "case.kind": ("Kind", "Math"),
    "case.starts": ("Starts", "Yn dechrau"),
    "case.venue": ("Venue", "Lleoliad"),
    "case.agreement": ("Agreement items", "Eitemau'r cytundeb"),
    "case.item": ("Item", "Eitem"),
    "case.owner": ("Owner", "Perchennog"),
    "case.due": ("Due", "Erbyn"),
    "case.state": ("State", "Cyflwr"),
    "case.description": ("Description", "Disgrifiad"),
    "case.mark_done": ("Mark done", "Nodi ei fod wedi'i wneud"),
    "case.indirect": ("Indirect items", "Eitemau anuniongyrchol"),
    "case.from_to": ("From, to", "Oddi wrth, at"),
    "case.content": ("Content", "Cynnwys"),
    "case.approve": ("Approve", "Cymeradwyo"),
    "case.reject": ("Reject", "Gwrthod"),
    "case.notifications": ("Notifications", "Hysbysiadau"),
    "case.notification": ("Message", "Neges"),
    "case.to_whom": ("To", "At"),
    "case.channel": ("Channel", "Sianel"),
    "case.delivery": ("Delivery", "Danfon"),
    "case.next_channel": ("trying {channel} next", "yn rhoi cynnig ar {channel} nesaf"),
    "case.participant_hidden": ("A participant", "Cyfranogwr"),
    "case.staff": ("Staff", "Staff"),
    "case.uncertain_alert": (
        "Delivery uncertain for {count} message(s): they may or may not have reached the person and will not be sent "
        "again. Check with the person that they got it.",
        "Danfon yn ansicr ar gyfer {count} neges: efallai eu bod wedi cyrraedd y person neu beidio, ac ni fyddant yn "
        "cael eu hanfon eto. Gwiriwch gyda'r person eu bod wedi'i chael.",
    ),
    "case.deadlines": ("Deadlines", "Terfynau amser"),
    "case.contact_log": ("Contact log", "Cofnod cysylltu"),
    "case.method": ("Method", "Dull"),
    "case.outcome": ("Outcome", "Canlyniad"),
    "case.note": ("Note", "Nodyn"),
    "case.notes": ("Notes", "Nodiadau"),
    "case.added_by": ("Added by", "Ychwanegwyd gan"),
    "case.timeline": ("Timeline", "Llinell amser"),
    "case.what": ("What happened", "Beth ddigwyddodd"),
    "case.who": ("Who", "Pwy"),
    "case.nothing": ("Nothing yet.", "Dim byd eto."),
    "case.personal_hidden": (
        "Personal details are hidden. Auditors see them only after saying why; the reason is logged.",
        "Mae manylion personol wedi'u cuddio. Dim ond ar ôl dweud pam y bydd archwilwyr yn eu gweld; caiff y rheswm "
        "ei gofnodi.",
    ),
    "case.reason": ("Why you need to see personal details", "Pam mae angen i chi weld manylion personol"),
    "case.show_personal": ("Show personal details", "Dangos manylion personol"),
    "case.view_logged": (
        "Your view of personal details on this page is logged.",
        "Mae eich golwg ar y manylion personol ar y dudalen hon yn cael ei chofnodi.",
    ),
    # --- actions and their outcome
    "action.why": ("Why, kept with the record", "Pam, yn cael ei gadw gyda'r cofnod"),
    "action.send": ("Send", "Anfon"),
    "action.cancel": ("Cancel", "Canslo"),
    "action.item_row": ("Item {n}", "Eitem {n}"),
    "problem.required": ("Enter or choose a value", "Rhowch neu dewiswch werth"),
    "problem.time": ("Enter a date and time", "Rhowch ddyddiad ac amser"),
    "problem.amount": ("Enter an amount in pounds, such as 25.50", "Rhowch swm mewn punnoedd, fel 25.50"),
    "outcome.title": ("What happened to your request", "Beth ddigwyddodd i'ch cais"),
    "outcome.pending": (
        "Sent. Waiting for the service that owns it to answer.",
        "Wedi'i anfon. Yn aros i'r gwasanaeth sy'n berchen arno ateb.",
    ),
    "outcome.check": ("Check again", "Gwirio eto"),
    "outcome.accepted": ("Done: it was accepted.", "Wedi'i wneud: cafodd ei dderbyn."),
    "outcome.rejected": ("Not done: it was rejected.", "Heb ei wneud: cafodd ei wrthod."),
    "outcome.unchanged": ("Nothing changed: it was already so.", "Dim newid: roedd eisoes felly."),
    "outcome.already_handled": (
        "This was sent before and already handled.",
        "Anfonwyd hwn o'r blaen ac mae wedi'i drin.",
    ),
    "outcome.reason": ("Reason", "Rheswm"),
    "outcome.facts": ("What it recorded", "Beth a gofnodwyd"),
    # --- queues
    "deadlines.title": ("Deadlines", "Terfynau amser"),
    "deadlines.breached": ("Missed", "Wedi'u methu"),
    "deadlines.due": ("Coming up", "Ar y gweill"),
    "deadlines.kind": ("Deadline", "Terfyn amser"),
    "deadlines.subject": ("For", "Ar gyfer"),
    "deadlines.none": ("None.", "Dim."),
    "indirect.title": ("Indirect items to approve", "Eitemau anuniongyrchol i'w cymeradwyo"),
    "indirect.intro": (
        "Letters, messages and recordings wait here until a facilitator has screened them. Open the case to read "
        "one before you approve it.",
        "Mae llythyrau, negeseuon a recordiadau yn aros yma nes bod hwylusydd wedi'u sgrinio. Agorwch yr achos i "
        "ddarllen un cyn i chi ei gymeradwyo.",
    ),
    "indirect.submitted": ("Submitted", "Cyflwynwyd"),
    "indirect.none": ("Nothing is waiting.", "Does dim yn aros."),
    # --- errors
    "error.title": ("Sorry, there is a problem", "Mae'n ddrwg gennym, mae problem"),
    "error.not_found": ("Page not found", "Heb ddod o hyd i'r dudalen"),
    "error.not_found_body": (
        "There is no such case, or it is not one you may see.",
        "Does dim achos o'r fath, neu nid yw'n un y cewch ei weld.",
    ),
    "error.forbidden": ("You cannot do this", "Ni allwch wneud hyn"),
    "error.internal": (
        "Something went wrong on our side. It has been logged. Try again later.",
        "Aeth rhywbeth o'i le ar ein hochr ni. Mae wedi'i gofnodi. Rhowch gynnig arall arni nes ymlaen.",
    ),
}

#: Labels of the codes the services use, by kind; a code without one is shown as it is.
CODES: dict[str, dict[str, tuple[str, str]]] = {
    "status": {
        "referred": ("Referred", "Wedi'i atgyfeirio"),
        "accepted": ("Accepted", "Wedi'i dderbyn"),
        "declined": ("Declined", "Wedi'i wrthod"),
        "preparation": ("Preparation", "Paratoi"),
        "ready": ("Ready for a meeting", "Yn barod am gyfarfod"),
        "withdrawn": ("Withdrawn", "Wedi'i dynnu'n ôl"),
        "closed": ("Closed", "Wedi cau"),
    },
    "role": {
        "victim": ("Victim", "Dioddefwr"),
        "offender": ("Offender", "Troseddwr"),
        "supporter": ("Supporter", "Cefnogwr"),
        "parent_guardian": ("Parent or guardian", "Rhiant neu warcheidwad"),
        "advocate": ("Advocate", "Eiriolwr"),
        "interpreter": ("Interpreter", "Cyfieithydd"),
        "facilitator": ("facilitator", "hwylusydd"),
        "volunteer": ("volunteer facilitator", "hwylusydd gwirfoddol"),
        "coordinator": ("coordinator", "cydlynydd"),
        "auditor": ("auditor", "archwiliwr"),
    },
    "decision": {
        "given": ("Given", "Wedi'i roi"),
        "declined": ("Declined", "Wedi'i wrthod"),
        "withdrawn": ("Withdrawn", "Wedi'i dynnu'n ôl"),
    },
    "deadline": {
        "victim_information": ("Tell the victim about RJ", "Dweud wrth y dioddefwr am gyfiawnder adferol"),
        "victim_support_referral": ("Refer to victim support", "Atgyfeirio at gymorth i ddioddefwyr"),
        "agreement_item": ("Agreement item", "Eitem cytundeb"),
    },
    "item_state": {
        "open": ("Open", "Ar agor"),
        "due_soon": ("Due soon", "Yn ddyledus cyn bo hir"),
        "overdue": ("Overdue", "Yn hwyr"),
        "completed": ("Completed", "Wedi'i gwblhau"),
        "submitted": ("Waiting for approval", "Yn aros am gymeradwyaeth"),
        "approved": ("Approved", "Wedi'i gymeradwyo"),
        "rejected": ("Rejected", "Wedi'i wrthod"),
        "released": ("Released", "Wedi'i ryddhau"),
        "delivered": ("Delivered", "Wedi'i ddosbarthu"),
        "withdrawn": ("Withdrawn", "Wedi'i dynnu'n ôl"),
        "due": ("Due", "Yn ddyledus"),
        "breached": ("Missed", "Wedi'i fethu"),
        "met": ("Met", "Wedi'i gyflawni"),
        "proposed": ("Proposed", "Wedi'i gynnig"),
        "booked": ("Booked", "Wedi'i drefnu"),
        "held": ("Held", "Wedi'i gynnal"),
        "cancelled": ("Cancelled", "Wedi'i ganslo"),
    },
    "delivery": {
        "scheduled": ("Waiting to go", "Yn aros i fynd"),
        "sent": ("Sent", "Wedi'i anfon"),
        "failed": ("Failed", "Wedi methu"),
        "uncertain": ("Delivery uncertain", "Danfon yn ansicr"),
        "cancelled": ("Cancelled", "Wedi'i ganslo"),
    },
    "channel": {
        "email": ("Email", "E-bost"),
        "sms": ("Text message", "Neges destun"),
        "letter": ("Letter", "Llythyr"),
        "phone": ("Phone", "Ffôn"),
    },
    "notification": {
        "victim_information": ("Information about RJ", "Gwybodaeth am gyfiawnder adferol"),
        "facilitator_assigned": ("New case assigned", "Achos newydd wedi'i neilltuo"),
        "facilitator_withdrawal": ("A withdrawal on the case", "Tynnu'n ôl ar yr achos"),
        "facilitator_hold": ("The case was put on hold", "Cafodd yr achos ei atal"),
        "facilitator_delivery_problem": ("A message could not be delivered", "Nid oedd modd danfon neges"),
        "meeting_booked": ("Meeting booked", "Cyfarfod wedi'i drefnu"),
        "meeting_rescheduled": ("Meeting moved", "Cyfarfod wedi'i symud"),
        "meeting_cancelled": ("Meeting cancelled", "Cyfarfod wedi'i ganslo"),
        "meeting_reminder": ("Meeting reminder", "Nodyn atgoffa am gyfarfod"),
        "item_reminder": ("Agreement item reminder", "Nodyn atgoffa am eitem cytundeb"),
        "item_unmet": ("Agreement item not met", "Eitem cytundeb heb ei chyflawni"),
        "indirect_item": ("Indirect item passed on", "Eitem anuniongyrchol wedi'i throsglwyddo"),
        "process_stopped": ("The process has stopped", "Mae'r broses wedi dod i ben"),
        "withdrawal_confirmed": ("Withdrawal confirmed", "Cadarnhad o dynnu'n ôl"),
        "closure": ("Case closed", "Achos wedi cau"),
        "survey_invitation": ("Satisfaction survey", "Arolwg boddhad"),
    },
    "command": {
        "rj.facilitator.assign": ("Assign a facilitator", "Neilltuo hwylusydd"),
        "rj.preparation-meeting.record": ("Record a preparation meeting", "Cofnodi cyfarfod paratoi"),
        "rj.consent.give": ("Record consent given", "Cofnodi caniatâd a roddwyd"),
        "rj.consent.decline": ("Record consent declined", "Cofnodi caniatâd a wrthodwyd"),
        "rj.consent.withdraw": ("Record consent withdrawn", "Cofnodi caniatâd a dynnwyd yn ôl"),
        "rj.risk-assessment.record": ("Record a risk assessment", "Cofnodi asesiad risg"),
        "rj.case.put-on-hold": ("Put the case on hold", "Atal yr achos"),
        "rj.case.resume": ("Resume the case", "Ailddechrau'r achos"),
        "rj.meeting.book": ("Book a meeting", "Trefnu cyfarfod"),
        "rj.meeting.record-held": ("Record a meeting held", "Cofnodi cyfarfod a gynhaliwyd"),
        "rj.agreement.record": ("Record the agreement", "Cofnodi'r cytundeb"),
        "rj.agreement-item.complete": ("Mark an agreement item done", "Nodi bod eitem cytundeb wedi'i gwneud"),
        "rj.indirect.approve-item": ("Approve an indirect item", "Cymeradwyo eitem anuniongyrchol"),
        "rj.indirect.reject-item": ("Reject an indirect item", "Gwrthod eitem anuniongyrchol"),
        "rj.case.close": ("Close the case", "Cau'r achos"),
        "rj.case.add-note": ("Add a note", "Ychwanegu nodyn"),
    },
    "field": {
        "facilitator_id": ("Facilitator id", "Rhif adnabod yr hwylusydd"),
        "person_id": ("Person", "Person"),
        "met_at": ("When you met", "Pryd y gwnaethoch gyfarfod"),
        "method": ("How", "Sut"),
        "purpose": ("What the consent is for", "Ar gyfer beth mae'r caniatâd"),
        "through": ("Given through", "Wedi'i roi drwy"),
        "decided_at": ("When they decided", "Pryd y gwnaethant benderfynu"),
        "assessed_at": ("When it was assessed", "Pryd y cafodd ei asesu"),
        "level": ("Risk level", "Lefel risg"),
        "safe_to_proceed": ("Safe to proceed", "Diogel i fwrw ymlaen"),
        "concern": ("The safeguarding concern", "Y pryder diogelu"),
        "raised_by": ("Raised by", "Codwyd gan"),
        "meeting_id": ("Meeting", "Cyfarfod"),
        "kind": ("Kind", "Math"),
        "starts_at": ("Starts", "Yn dechrau"),
        "ends_at": ("Ends", "Yn gorffen"),
        "lead_facilitator_id": ("Lead facilitator id", "Rhif adnabod yr hwylusydd arweiniol"),
        "co_facilitator_id": ("Co-facilitator id", "Rhif adnabod y cyd-hwylusydd"),
        "venue_id": ("Venue id", "Rhif adnabod y lleoliad"),
        "visit_slot": ("Prison visit slot", "Slot ymweliad carchar"),
        "held_at": ("When it was held", "Pryd y cafodd ei gynnal"),
        "items": ("Items", "Eitemau"),
        "item_id": ("Item", "Eitem"),
        "description": ("Description", "Disgrifiad"),
        "owner_id": ("Who undertakes it", "Pwy sy'n ymgymryd ag ef"),
        "due_date": ("Due date", "Dyddiad dyledus"),
        "amount_pence": ("Amount in pounds", "Swm mewn punnoedd"),
        "consented_by": ("Who consented to the agreement", "Pwy gytunodd i'r cytundeb"),
        "closure_reason": ("Why the case closes", "Pam mae'r achos yn cau"),
        "text": ("Note", "Nodyn"),
        "reason": ("Why", "Pam"),
    },
}


@dataclass(frozen=True, slots=True)
class Text:
    """The console's words in one language: ``t("key", name=value)`` and ``t.code("status", "ready")``."""

    lang: str

    def __call__(self, key: str, **values: object) -> str:
        english, welsh = MESSAGES[key]
        words = welsh if self.lang == "cy" else english
        return words.format(**values) if values else words

    def code(self, kind: str, value: object) -> str:
        """The label of a code (``None`` shows as a dash), or the code itself when it has none."""
        if value is None:
            return "–"
        labels: Mapping[str, tuple[str, str]] = CODES.get(kind, {})
        pair = labels.get(str(value))
        if pair is None:
            return str(value)
        return pair[1] if self.lang == "cy" else pair[0]


def text(lang: str) -> Text:
    return Text(lang if lang in LANGUAGES else "en")


@dataclass(frozen=True, slots=True)
class Section:
    """One part of the accessibility statement, under one of the GOV.UK model statement's headings."""

    heading: tuple[str, str]
    paragraphs: tuple[tuple[str, str], ...]
    level: int = 2


#: The accessibility statement, after the GOV.UK model accessibility statement for public sector websites.
STATEMENT_TITLE = (
    "Accessibility statement for the restorative justice console",
    "Datganiad hygyrchedd ar gyfer y consol cyfiawnder adferol",
)
STATEMENT: tuple[Section, ...] = (
    Section(
        ("Using this website", "Defnyddio'r wefan hon"),
        (
            (
                "This accessibility statement applies to the restorative justice console, which staff of the "
                "restorative justice service use to run cases, and to the pages participants use to stop taking part.",
                "Mae'r datganiad hygyrchedd hwn yn berthnasol i'r consol cyfiawnder adferol, y mae staff y gwasanaeth "
                "cyfiawnder adferol yn ei ddefnyddio i redeg achosion, ac i'r tudalennau y mae cyfranogwyr yn eu "
                "defnyddio i roi'r gorau i gymryd rhan.",
            ),
            (
                "We want as many people as possible to be able to use it. You should be able to zoom in up to 400% "
                "without the text spilling off the screen, use it on a phone as narrow as 320 pixels, get from the "
                "start to the end of every task with a keyboard alone, use it with a screen reader, and use it in "
                "English or Welsh.",
                "Rydym am i gynifer o bobl â phosibl allu ei defnyddio. Dylech allu chwyddo hyd at 400% heb i'r "
                "testun ddiflannu oddi ar y sgrin, ei defnyddio ar ffôn mor gul â 320 picsel, mynd o ddechrau i "
                "ddiwedd pob tasg gyda bysellfwrdd yn unig, ei defnyddio gyda darllenydd sgrin, a'i defnyddio yn "
                "Gymraeg neu yn Saesneg.",
            ),
        ),
    ),
    Section(
        ("How accessible this website is", "Pa mor hygyrch yw'r wefan hon"),
        (
            (
                "We know some parts of this website are not fully accessible: the Welsh text has not yet been "
                "reviewed by a Welsh translator, and messages that come from the case services themselves (the "
                "reason a request was refused) are in English only.",
                "Rydym yn gwybod nad yw rhai rhannau o'r wefan hon yn gwbl hygyrch: nid yw cyfieithydd wedi "
                "adolygu'r testun Cymraeg eto, ac mae negeseuon sy'n dod o'r gwasanaethau achos eu hunain (y rheswm "
                "y gwrthodwyd cais) yn Saesneg yn unig.",
            ),
        ),
    ),
    Section(
        ("Feedback and contact information", "Adborth a gwybodaeth gyswllt"),
        (
            (
                "If you need information on this website in a different format, contact your restorative justice "
                "service's coordinator. We will consider your request and get back to you within 5 working days.",
                "Os oes angen gwybodaeth ar y wefan hon arnoch mewn fformat gwahanol, cysylltwch â chydlynydd eich "
                "gwasanaeth cyfiawnder adferol. Byddwn yn ystyried eich cais ac yn ymateb o fewn 5 diwrnod gwaith.",
            ),
        ),
    ),
    Section(
        ("Reporting accessibility problems with this website", "Rhoi gwybod am broblemau hygyrchedd gyda'r wefan hon"),
        (
            (
                "We are always looking to improve the accessibility of this website. If you find any problems not "
                "listed on this page or think we are not meeting accessibility requirements, contact your "
                "service's coordinator.",
                "Rydym bob amser yn ceisio gwella hygyrchedd y wefan hon. Os byddwch yn dod o hyd i unrhyw "
                "broblemau nad ydynt wedi'u rhestru ar y dudalen hon neu os ydych yn meddwl nad ydym yn bodloni "
                "gofynion hygyrchedd, cysylltwch â chydlynydd eich gwasanaeth.",
            ),
        ),
    ),
    Section(
        ("Enforcement procedure", "Y weithdrefn orfodi"),
        (
            (
                "The Equality and Human Rights Commission (EHRC) is responsible for enforcing the Public Sector "
                "Bodies (Websites and Mobile Applications) (No. 2) Accessibility Regulations 2018 (the 'accessibility "
                "regulations'). If you are not happy with how we respond to your complaint, contact the Equality "
                "Advisory and Support Service (EASS).",
                "Y Comisiwn Cydraddoldeb a Hawliau Dynol (EHRC) sy'n gyfrifol am orfodi Rheoliadau Hygyrchedd Cyrff "
                "y Sector Cyhoeddus (Gwefannau a Chymwysiadau Symudol) (Rhif 2) 2018 (y 'rheoliadau hygyrchedd'). Os "
                "nad ydych yn hapus gyda'r ffordd rydym yn ymateb i'ch cwyn, cysylltwch â'r Gwasanaeth Cynghori a "
                "Chymorth Cydraddoldeb (EASS).",
            ),
        ),
    ),
    Section(
        ("Technical information about this website's accessibility", "Gwybodaeth dechnegol am hygyrchedd y wefan hon"),
        (
            (
                "We are committed to making this website accessible, in accordance with the Public Sector Bodies "
                "(Websites and Mobile Applications) (No. 2) Accessibility Regulations 2018.",
                "Rydym wedi ymrwymo i wneud y wefan hon yn hygyrch, yn unol â Rheoliadau Hygyrchedd Cyrff y Sector "
                "Cyhoeddus (Gwefannau a Chymwysiadau Symudol) (Rhif 2) 2018.",
            ),
        ),
    ),
    Section(
        ("Compliance status", "Statws cydymffurfio"),
        (
            (
                "This website is partially compliant with the Web Content Accessibility Guidelines version 2.2 AA "
                "standard, due to the non-compliances listed below.",
                "Mae'r wefan hon yn cydymffurfio'n rhannol â safon AA Canllawiau Hygyrchedd Cynnwys y We fersiwn "
                "2.2, oherwydd y diffyg cydymffurfio a restrir isod.",
            ),
        ),
        level=3,
    ),
    Section(
        ("Non-accessible content", "Cynnwys nad yw'n hygyrch"),
        (
            (
                "Messages from the case services that say why a request was refused are in English only, also on "
                "Welsh pages (WCAG 3.1.2 Language of Parts). We plan to translate them by the next review of this "
                "statement.",
                "Mae negeseuon gan y gwasanaethau achos sy'n dweud pam y gwrthodwyd cais yn Saesneg yn unig, hefyd "
                "ar dudalennau Cymraeg (WCAG 3.1.2 Iaith Rhannau). Rydym yn bwriadu eu cyfieithu erbyn yr adolygiad "
                "nesaf o'r datganiad hwn.",
            ),
        ),
    ),
    Section(
        ("What we're doing to improve accessibility", "Beth rydym yn ei wneud i wella hygyrchedd"),
        (
            (
                "Every change to the console is tested in a browser with axe-core, which must find no serious or "
                "critical problem on any page, and on a phone-sized screen.",
                "Caiff pob newid i'r consol ei brofi mewn porwr gydag axe-core, na ddylai ddod o hyd i unrhyw "
                "broblem ddifrifol neu gritigol ar unrhyw dudalen, ac ar sgrin maint ffôn.",
            ),
        ),
    ),
    Section(
        ("Preparation of this accessibility statement", "Paratoi'r datganiad hygyrchedd hwn"),
        (
            (
                "This statement was prepared in 2026. The website is tested automatically on every change, with "
                "axe-core in headless Chromium, on desktop and phone screen sizes, by the team that builds it.",
                "Paratowyd y datganiad hwn yn 2026. Caiff y wefan ei phrofi'n awtomatig ar bob newid, gydag "
                "axe-core mewn Chromium heb ben, ar feintiau sgrin bwrdd gwaith a ffôn, gan y tîm sy'n ei hadeiladu.",
            ),
        ),
    ),
)
