"""The built-in, deterministic extractor: messages in, facts and entities out.

No model is involved, so the same messages always give the same facts. Each message keeps
the sentences that state something (no greetings, questions or fillers), attributed to
their speaker ("Ana: I moved to Lyon"). *Keyed* facts are those whose newer value replaces
the older one, recognised in their usual wordings: ``location`` (live in, moved to, based
in, home is ...), ``employer`` (work for, joined, new job at, hired by, "switched jobs and
I'm at X" ...), ``job`` (work as, promoted to, "I'm a nurse" ...), ``favourite <domain>``
(my favourite drink is, prefer, into, mostly drink, "nothing beats X", "I could eat X every
day" ...; the domain is named or looked up in a small lexicon of drinks, foods and sports,
so "I prefer tea" updates "my favourite drink is coffee"; else "prefer" gives
``preference``) and "my X is Name". A keyed fact is the speaker's own: the verb's subject
is "I" or "we", or left out ("Just moved to Lyon!", "Nothing beats tea"); "my sister moved
to Rome", "if I moved to Rome", "I lived in Rome" and "Nothing beats tea, my dad says" stay
plain facts. Places and employers are proper names ("I work at home" is no employer); a
job without a cue word ("I'm a ...") ends in an occupation. "I no longer ..." / "... any
more" retracts a location or employer.
:func:`asks_for` names the attributes a question asks about, for search.

An optional LLM extractor (any OpenAI-compatible endpoint) can replace this one; both
return :class:`Fact` lists, so curation downstream is the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")
_WORD = re.compile(r"[A-Za-z][\w'-]*")
_NAME = re.compile(r"\b([A-Z][a-z]+(?:[ -][A-Z][a-z]+)*)\b")
_GREETING = re.compile(
    r"^(hi|hey|hello|thanks|thank you|bye|goodbye|good (morning|night|evening)|ok|okay|"
    r"sure|cool|wow|great|nice|awesome|haha|lol|yeah|yes|no)\b[\s!.,]*\S{0,20}[\s!.]*$",
    re.I,
)
NOT_NAMES = frozenset(
    "I I'm I've I'd I'll The A An And But Or So If When What Where Who Why How Which This "
    "That These Those It It's My Your Our Their His Her We You They He She Yes No Oh Hey Hi "
    "Hello Thanks Thank Wow Great Nice Ok Okay Sure Well Also Just Really Today Yesterday "
    "Tomorrow Monday Tuesday Wednesday Thursday Friday Saturday Sunday Did Do Does Is Are "
    "Was Were Have Has Had Can Could Would Should Will Let Let's Yeah Good Love Congrats "
    "Absolutely Definitely Totally Lol Haha Hmm Awesome Cool Same There Here Then Now".split()
)
_CALENDAR = NOT_NAMES | frozenset(
    "January February March April May June July August September October November December "
    "Spring Summer Autumn Fall Winter Last Next Since".split()
)
_JOBS = frozenset(
    "engineer developer programmer teacher nurse doctor designer manager writer chef cook lawyer "
    "attorney student artist scientist analyst consultant accountant architect musician pilot "
    "pharmacist electrician barista journalist paramedic librarian dentist translator interpreter "
    "veterinarian vet copywriter researcher carpenter economist director worker plumber technician "
    "attendant mechanic baker waiter waitress cashier clerk editor professor lecturer tutor "
    "surgeon firefighter officer soldier driver farmer gardener painter actor actress dancer "
    "singer producer reporter banker broker trader agent recruiter secretary assistant "
    "administrator receptionist coach trainer instructor intern founder entrepreneur freelancer "
    "contractor welder builder surveyor planner strategist specialist coordinator supervisor lead "
    "executive auditor chemist physicist statistician historian curator archivist midwife "
    "optometrist therapist psychiatrist florist stylist hairdresser butcher tailor janitor "
    "caretaker courier postman bartender sommelier ceo cto cfo vp head partner owner".split()
)
_JOB_SUFFIX = re.compile(r"(?:ologist|ician|grapher|eer|therapist|smith|wright)$", re.I)
_DOMAIN_OF = {
    word.replace("_", " "): domain
    for domain, words in {
        "drink": "coffee tea espresso latte cappuccino americano macchiato mocha chai matcha cocoa "
        "kombucha lemonade juice smoothie milkshake milk soda cola water beer ale lager stout "
        "wine champagne prosecco cider whisky whiskey gin vodka rum tequila sake brew kefir mate "
        "horchata lassi hot_chocolate decaf",
        "food": "sushi ramen pho taco burrito pizza pasta curry dumpling falafel paella lasagna "
        "risotto gnocchi biryani pad_thai noodle salad soup burger sandwich steak barbecue dim_sum "
        "kebab shawarma hummus pancake waffle ice_cream cheese bread bagel croissant ceviche "
        "bibimbap kimchi tapas fajita enchilada udon tempura poke",
        "sport": "tennis table_tennis badminton squash volleyball basketball football soccer rugby "
        "cricket baseball softball golf hockey handball padel pickleball netball lacrosse polo "
        "bowling darts snooker climbing bouldering running swimming cycling yoga pilates boxing "
        "surfing skiing snowboarding rowing fencing karate judo",
    }.items()
    for word in words.split()
}
_DOMAIN_WORDS = {"beverage": "drink", "drinks": "drink", "dish": "food", "meal": "food",
                 "cuisine": "food", "snack": "food", "eat": "food", "sports": "sport",
                 "play": "sport"}

# -- whose fact: the subject of the verb ---------------------------------------------------
_LEAD = (r"(?:(?:so|well|oh|yeah|anyway|guess what|big news|update|these days|lately|"
         r"nowadays|recently|finally|actually|now|honestly|personally|for me|to be honest|tbh|"
         r"since \w+|as of \w+|(?:this|last) \w+)\W+)*")
_AUX = r"(?:'ve been|'ve|'m|'re|'d| have been| have| am| are| was| were| got| just got)?"
_ADV = (r"(?:(?:just|recently|now|finally|already|officially|actually|also|still|"
        r"currently|both|all|happily|really|totally|mostly|usually|mainly|so)\s+)*")
_AFTER_I = re.compile(rf"\b(?:I|we){_AUX}\s*{_ADV}$", re.I)  # "... I've just " + verb
_NOTHING = re.compile(rf"^{_LEAD}{_ADV}$", re.I)  # "Just " + verb: the speaker, unsaid
_AFTER_AND = re.compile(rf"\band\s+(?:now\s+)?{_ADV}$", re.I)  # "We packed up and " + verb
_SAID_BY_I = re.compile(rf"^{_LEAD}(?:I|we)\b", re.I)
_UNREAL = re.compile(r"\b(?:if|unless|would|wish|hope|hoping|imagine|maybe|someday|might|"
                     r"planning|plan to|wants? to|thinking (?:of|about)|never|not)\b|n't\b", re.I)


def _first_person(before: str, sentence: str) -> bool:
    return bool(_AFTER_I.search(before) or _NOTHING.match(before)
                or (_AFTER_AND.search(before) and _SAID_BY_I.match(sentence)))


# -- values ---------------------------------------------------------------------------------
_PROPER = re.compile(r"(?:the\s+)?([A-Z][\w'&-]*(?:(?:\s+(?:of|de|da|do|del|la|le|du|upon|am|"
                     r"&))*\s+[A-Z][\w'&-]*)*)")
_CUT = re.compile(
    r"\s+(?:at|for|with|in|on|since|and|but|because|so|after|before|when|while|which|who|that|"
    r"than|over|instead|rather|to|until|these days|now|lately|nowadays|right now|every|most|all|"
    r"again|too|as well|recently|yesterday|today|(?:last|this|next) \w+|\w+ \w+ ago)\b.*$", re.I)
_ARTICLE = re.compile(r"^(?:(?:an?|the|some|more|my|our)\s+)?"  # "a cup of tea" -> "tea"
                      r"(?:(?:cup|glass|mug|bowl|plate|slice|pint|bottle|pot)s?\s+of\s+)?", re.I)


def _proper(tail: str) -> str | None:
    """The proper name ``tail`` starts with ("Rio de Janeiro", "Bank of Avalon")."""
    words = m.group(1).split() if (m := _PROPER.match(tail)) else []
    while words and words[-1] in _CALENDAR:  # "Initech Monday" -> "Initech"
        words.pop()
    return " ".join(words) if words and words[0] not in NOT_NAMES else None


def _phrase(tail: str) -> str | None:
    """A short noun phrase: ``tail`` up to its first preposition or time word."""
    value = _ARTICLE.sub("", _CUT.sub("", re.split(r"[,.;:!?()]", tail)[0].strip())).strip(" '\"")
    return value if value and len(value.split()) <= 4 and not value.startswith("to ") else None


def _occupation(tail: str) -> str | None:
    value = _phrase(tail)
    head = value.split()[-1].lower() if value else ""
    return value if head and (head in _JOBS or _JOB_SUFFIX.search(head)) else None


def _domain(value: str) -> str | None:
    """The domain ("drink", "food", "sport") of a value, from the lexicon, or None."""
    words = value.lower().split()
    for w in (" ".join(words), words[-1], words[-1].removesuffix("s"), words[-1].removesuffix("es"),
              words[0]):
        if w in _DOMAIN_OF:
            return _DOMAIN_OF[w]
    return None


def _favourite(kind: str) -> str:
    return "favourite " + _DOMAIN_WORDS.get(kind.lower().strip(), kind.lower().strip())


# -- rules: (attribute, pattern, value reader, the speaker must be the verb's subject) ------
# The value is read from the group ``v`` if the pattern has one, else from the text after
# the match. "favourite" names its domain in the group ``k``; "like" takes it from the
# value (no known domain: no key); "prefer" too, else it is the generic "preference".
_P = r"(?-i:[A-Z][\w'&-]*(?:\s+(?:of|de|&)?\s*[A-Z][\w'&-]*)*)"  # a proper name
_SOON = r"(?:$|[,.!;]|\s+(?:as|last|this|in|on|back|recently|a\s+\w+\s+ago)\b)"
_OFTEN = (r"every day|daily|most days|most weekends|every weekend|all the time|every morning|"
          r"these days|nowadays|lately|now")
_LOTS = r"(?:a lot of|lots of|so much|loads of)\s+"
_THING = r"(?P<v>[\w' -]{2,40}?)\s+is\s+(?:now\s+|still\s+)?my\s+"
# "I switched jobs and I'm at X now": "I'm at X" names an employer after a change of job.
_NEW_JOB = (r"\b(?:switched|changed|swapped|left|quit)\s+(?:my\s+)?(?:old\s+)?(?:jobs?|careers?|"
            r"employers?|compan(?:y|ies)|firms?)\b[\s,;-]*(?:and\s+|so\s+)?(?:now\s+)?"
            r"(?:I'm|I am|we're|we are)\s+(?:now\s+)?at\s+")
# The speaker's superlative, subject unsaid: "Nothing beats X", "You can't beat X".
_BEST = (rf"^{_LEAD}(?:nothing(?:'s|\s+is)?\s+(?:beats?|tops?|(?:better|nicer)\s+than|"
         r"compares?\s+(?:to|with)|comes?\s+close\s+to)|(?:you\s+)?can(?:'t|not)\s+beat|"
         r"there's\s+nothing\s+(?:quite\s+)?like)\s+")
# A modal hyperbole of habit: "I could eat X every day", "I could happily drink X all day".
_COULD = (r"(?:every\s+(?:single\s+)?(?:day|morning|night|meal)|all\s+day(?:\s+long)?|forever|"
          r"day\s+and\s+night)")
Rule = tuple[str, re.Pattern[str], Callable[[str], str | None], bool]
_RULES: list[Rule] = [
    (attr, re.compile(p, re.I), reader, own)
    for attr, p, reader, own in [
        ("location", r"\b(?:live|living|reside|residing|based|settled|moved|relocated|made the "
                     r"(?:big )?move|moved (?:back|over|out|down))\s+(?:down\s+)?(?:in|to)\s+",
         _proper, True),
        ("location", rf"^{_LEAD}(?={_P}\s+is\s+(?:now\s+)?(?:my\s+|our\s+)?(?:new\s+)?home\b)",
         _proper, False),
        ("location", rf"\bcall\s+(?=(?:the\s+)?{_P}\s+home\b)", _proper, True),
        ("location", r"\b(?:my|our)\s+new\s+(?:place|flat|apartment|house|home)\s+in\s+",
         _proper, False),
        ("location", rf"^{_LEAD}(?:my\s+|our\s+)?(?:new\s+)?(?:home|city|address|base)\s+is\s+"
                     r"(?:now\s+)?(?:in\s+)?", _proper, False),
        ("employer", r"\b(?:work|working)\s+(?:at|for)\s+", _proper, True),
        ("employer", rf"\b(?:joined|joining)\s+(?={_P}{_SOON})", _proper, True),
        ("employer", r"\b(?:started|starting)\s+(?:working\s+)?(?:at|with|for)\s+", _proper, True),
        ("employer", r"\b(?:got|took|accepted|landed|found|started|starting|have|signed|took up)"
                     r"\s+(?:a|an|my|the)\s+(?:new\s+)?(?:full-time\s+|part-time\s+)?(?:job|"
                     r"position|role|post|gig|offer|job offer|contract|internship)(?:\s+offer)?"
                     r"\s+(?:at|with|from)\s+", _proper, True),
        ("employer", r"\b(?:hired|employed|recruited|headhunted|taken on)\s+(?:by|at)\s+",
         _proper, True),
        ("employer", r"\bsigned\s+(?:on\s+)?with\s+", _proper, True),
        ("employer", _NEW_JOB, _proper, True),
        ("employer", rf"^{_LEAD}my\s+(?:new\s+)?(?:employer|company|workplace)\s+is\s+"
                     r"(?:now\s+)?", _proper, False),
        ("employer", rf"^{_LEAD}(?=(?:the\s+)?{_P}\s+(?:just\s+|recently\s+|finally\s+)?(?:hired|"
                     r"recruited|employs|took on)\s+me\b)", _proper, False),
        ("job", r"\b(?:(?:work|working|employed|hired|started|starting|retrained|trained|"
                r"qualified|certified)|(?:got|took|landed|found|have|accepted|started)\s+(?:a|an|"
                r"my|the)\s+(?:new\s+)?(?:job|position|role|post|gig))\s+as\s+", _phrase, True),
        ("job", r"\bpromoted\s+to\s+", _phrase, True),
        ("job", r"(?:'m|\bam|'re|\bare|\bbecame|\bbecome)\s+(?:now\s+|currently\s+|officially\s+)?"
                r"(?=an?\s)", _occupation, True),
        ("job", rf"^{_LEAD}my\s+(?:new\s+|current\s+)?(?:job title|title|role|position|"
                r"occupation|profession)\s+is\s+(?:now\s+)?", _phrase, False),
        ("job", rf"^{_LEAD}my\s+(?:new\s+|current\s+)?job\s+is\s+(?:now\s+)?", _occupation, False),
        ("prefer", r"\bprefer\s+", _phrase, True),
        ("like", r"\b(?:into|hooked on|obsessed with|crazy about|addicted to|loving|switched to|"
                 r"converted to|moved on to|taken up|took up|can't get enough of)\s+",
         _phrase, True),
        ("favourite", r"\bmy\s+(?:new\s+|current\s+|all-time\s+)?(?:favou?rite|go-to|usual|"
                      r"preferred)\s+(?P<k>[\w ]{2,30}?)\s+is\s+(?:now\s+|still\s+)?",
         _phrase, False),
        ("favourite", r"\bmy\s+(?P<k>\w+)\s+of\s+choice\s+is\s+(?:now\s+)?", _phrase, False),
        ("favourite", rf"^{_LEAD}{_THING}(?:new\s+)?(?:favou?rite|go-to|preferred)\s+(?P<k>\w+)",
         _phrase, False),
        ("favourite", rf"^{_LEAD}{_THING}(?P<k>\w+)\s+of\s+choice\b", _phrase, False),
        ("favourite", r"\b(?:mostly|usually|mainly|always|only)\s+(?P<k>drink|eat|play)\s+",
         _phrase, True),
        ("favourite", rf"\b(?P<k>drink|eat|play)(?:ing)?\s+(?:{_LOTS})?(?P<v>[\w' -]+?)\s+"
                      rf"(?:{_OFTEN})\b", _phrase, True),
        ("favourite", rf"\b(?P<k>drink|eat|play)ing\s+{_LOTS}", _phrase, True),
        ("favourite", rf"\bcould\s+{_ADV}(?P<k>drink|eat|play)\s+(?P<v>[\w' -]+?)\s+{_COULD}\b",
         _phrase, True),
        ("like", _BEST, _phrase, False),
    ]
]
# "..., my dad says": someone else's opinion, whatever the wording before it.
_REPORTED = re.compile(r"[,;]\s*(?:\w+\s+){0,2}(?:says?|said|reckons?|claims?|insists?)\b|"
                       r"\baccording to\b", re.I)
_MY_X_IS = re.compile(r"^my (?P<k>[a-z]{3,20}(?: [a-z]{3,20})?) is (?:now )?(?P<v>[^,.;!?]+)", re.I)
_RETRACT = re.compile(r"\b(no longer|any ?more|quit|left my job|stopped)\b", re.I)
_RETRACT_KEY = [
    ("location", re.compile(r"\b(live|living|based)\b", re.I)),
    ("employer", re.compile(r"\b(work|working|job|quit|left)\b", re.I)),
]
# What a question asks about, tried in order: "Where does Ana work?" asks for the employer.
_ASKS = [
    (
        "employer",
        r"\b(?:work(?:s|ing)? (?:for|at)|employ\w*|compan(?:y|ies)|firm|workplace)\b"
        r"|\bwhere (?:does|did|do|is) \w+(?: \w+)? work(?:s|ing)?\b(?! out)",
    ),
    ("job", r"\b(?:job|occupation|profession|role|title|career|for a living|works? as)\b"),
    ("location", r"\b(?:live[sd]?|living|based|reside\w*|home|city|town|where\b.*\bstay)\b"),
    ("favourite", r"\b(?:favou?rite|prefer\w*|like\w* (?:best|most)|enjoy\w*|love\w*|into|"
                  r"usually|of choice)\b"),
]
_ASKS_DOMAIN = re.compile(r"\b(drinks?|beverage|food|dish|meal|cuisine|eat|sports?|play|game)\b",
                          re.I)


@dataclass(frozen=True)
class Fact:
    """One thing worth remembering. ``key`` is set for facts whose value changes."""

    text: str
    key: str | None = None
    value: str | None = None
    retract: bool = False
    entities: tuple[str, ...] = field(default_factory=tuple)


def entities(text: str, speaker: str | None = None) -> tuple[str, ...]:
    """The speaker and capitalised names of ``text``, deduplicated, in order."""
    found: list[str] = [speaker] if speaker else []
    for m in _NAME.finditer(text):
        words = m.group(1).split()
        while words and words[0] in NOT_NAMES:  # "Yesterday Maria" -> "Maria"
            words.pop(0)
        name = " ".join(words)
        if name and name not in found:
            found.append(name)
    return tuple(found)


def keyed(sentence: str) -> tuple[str, str] | None:
    """The (attribute, value) the speaker states about themself in ``sentence``, if any."""
    s = sentence.strip().replace("\u2019", "'")
    for attr, pattern, reader, own in _RULES:
        for m in pattern.finditer(s):
            before = s[: m.start()]
            if _UNREAL.search(before) or (own and not _first_person(before, s)) or (
                    not own and _REPORTED.search(s)):
                continue
            if (value := reader(m.groupdict().get("v") or s[m.end():])) is None:
                continue
            if attr == "favourite":
                return _favourite(m.group("k")), value
            if attr in ("prefer", "like"):
                if (domain := _domain(value)) is None and attr == "like":
                    continue
                return (_favourite(domain) if domain else "preference"), value
            return attr, value
    if (mine := _MY_X_IS.search(s)) and re.match(r"[A-Z0-9]", name := mine.group("v").strip()):
        return mine.group("k").lower(), name
    return None


def asks_for(question: str) -> tuple[str, ...]:
    """The keyed attributes a question asks about, best first: "Where does Ana live?" ->
    ``("location",)``, "What does Ana like to drink?" -> ``("favourite drink", "preference")``.
    """
    word = m.group(1).lower() if (m := _ASKS_DOMAIN.search(question)) else ""
    domain = {"game": "sport", **_DOMAIN_WORDS}.get(word, word)
    liked = (_favourite(domain), "preference") if domain else ("preference",)
    for attr, pattern in _ASKS:
        if re.search(pattern, question, re.I):
            return liked if attr == "favourite" else (attr,)
    return liked if domain else ()


def worth_keeping(sentence: str) -> bool:
    """False for greetings, questions and fillers: they state nothing to remember."""
    s = sentence.strip()
    if s.endswith("?") or _GREETING.match(s):
        return False
    return len(_WORD.findall(s)) >= 3


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def extract(content: str, speaker: str | None, owner: str = "user") -> list[Fact]:
    """The facts of one message said by ``speaker``; unnamed, it is the scope's ``owner``."""
    subject = (speaker or owner).lower()
    facts: list[Fact] = []
    for sentence in split_sentences(content):
        if not worth_keeping(sentence):
            continue
        key, value, retract = None, None, False
        if found := keyed(sentence):
            key, value = f"{subject}/{found[0]}", found[1]
        elif _RETRACT.search(sentence):
            for attr, pattern in _RETRACT_KEY:
                if pattern.search(sentence):
                    key, retract = f"{subject}/{attr}", True
                    break
        text = f"{speaker}: {sentence}" if speaker else sentence
        facts.append(Fact(text, key, value, retract, entities(text, speaker)))
    return facts
