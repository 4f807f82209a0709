"""Memory updates: does search answer with the value that is true now, and then?

Run from the project root:

    .venv/bin/python bench/memory_updates.py [--people 20] [--seed 7] [--holdout|--fresh] [-v]

Method. From the seed, deterministically, each of ``--people`` people (one user scope
each) gets about a year of sessions a few weeks apart. Four attributes of the person
change over that year, each through 3-5 values: where they live (``location``), who they
work for (``employer``), their job title (``job``) and a preference in one domain (a
drink, a food or a sport: ``preference``). Each change is one message of the person,
stated in one of several wordings per attribute ("I moved to X", "We relocated to X",
"I'm based in X these days" ...), in the session of the change, among unrelated chatter
of the person (some naming other cities, companies, foods or drinks: "My sister moved
to Rome") and turns of a friend (with the friend's own city, employer or drink). Each
session is one ``memory.add(messages, user_id=..., timestamp=session date, infer=True)``
through the real kernel, in process, in a temporary home (as bench/locomo.py does; a
fresh home uses the built-in rule extractor, ``underlay.memory.extract``).

Questions, all ``memory.search(question, user_id=..., limit=5)``:

- current: for each person, attribute and question wording ("Where does Ana live?",
  "Who does Ana work for?" ...): is the current value in the FIRST result?
- as_of: for each person, attribute and period between two changes, one question with
  ``as_of`` a random time inside the period: is the value true then in the FIRST result?

A value counts as stated when it occurs in the result's ``memory`` text, case-insensitive,
as whole words. No value occurs in chatter (its cities, companies, foods and drinks come
from disjoint pools) and no value contains another, so a hit cannot come by chance.

Diagnostics: ``found``: the value is in any of the 5 results (first-place misses that
are ranking, not curation); ``keyed``: the share of change statements the extractor
turns into a keyed fact with exactly the stated value (run on the extractor alone);
``false_keyed``: chatter sentences that became a keyed fact of the person.

``--holdout`` swaps every wording (statements and questions) and every value pool for a
second set, written beside the first but never used to tune ``underlay.memory.extract``;
report both. ``--fresh`` swaps them for a third set (statements, questions, value pools,
chatter and the friend's turns), written later and before the extractor's next change,
never used to tune it either; its chatter adds other people's jobs and sports,
hypotheticals ("If I won the lottery I'd buy a flat in X"), negations ("I'd never move to
X") and the speaker's temporary whereabouts ("I'm in X for the weekend"). Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ATTRIBUTES = ("location", "employer", "job", "preference")
SESSIONS = 12
LIMIT = 5
PEOPLE = ("Ana Ben Chloe Diego Emma Farid Grace Hiro Isla Jonas Kira Liam Maya Noah Olga "
          "Priya Quinn Rosa Sven Tara Umar Vera Wes Yara Zoe Aiko Bruno Cleo Dmitri Elsa").split()
FRIENDS = "Sam Alex Robin Jules Kim Pat Lou Max".split()

# Wordings: {v} the value, {av} it with "a"/"an", {d} the preference's domain noun.
WORDINGS: dict[str, dict[str, list[str]]] = {
    "tuned": {
        "location": [
            "I moved to {v} last month.", "I live in {v} now.",
            "We relocated to {v} in the spring.", "I'm based in {v} these days.",
            "Just moved to {v}!", "We finally settled in {v}.",
            "I've been living in {v} since the summer.", "Home is {v} now.",
        ],
        "employer": [
            "I now work for {v}.", "Just started a new job at {v}.", "I joined {v} last week.",
            "I got hired by {v}.", "I've been working at {v} since March.",
            "My new employer is {v}.", "I accepted an offer from {v}.",
        ],
        "job": [
            "I'm working as {av} now.", "I got a job as {av}.", "My new role is {v}.",
            "I was promoted to {v}.", "I'm {av} now.", "I work as {av}.",
            "My job title is {v} these days.",
        ],
        "preference": [
            "These days I prefer {v}.", "Lately I've been into {v}.", "I'm really into {v} now.",
            "I've switched to {v}.", "My favourite {d} is {v}.", "My go-to {d} is {v} now.",
        ],
        "drink": ["I mostly drink {v} these days."],
        "food": ["I've been eating a lot of {v} lately."],
        "sport": ["I play {v} most weekends now."],
    },
    "holdout": {
        "location": [
            "We packed up and moved to {v}.", "These days I call {v} home.",
            "I'm living in {v} at the moment.", "I now reside in {v}.",
            "Our new place in {v} is finally unpacked.", "I made the move to {v} a few weeks ago.",
        ],
        "employer": [
            "{v} hired me last month.", "I'm employed by {v} now.", "Started at {v} on Monday.",
            "I signed a contract with {v}.", "I switched jobs and I'm at {v} now.",
            "I took a job with {v}.",
        ],
        "job": [
            "I've become {av}.", "I retrained as {av}.", "These days I'm {av}.",
            "I was hired as {av}.", "I took a position as {av}.",
            "I switched careers and now I'm {av}.",
        ],
        "preference": [
            "{V} is my new favourite {d}.", "Nothing beats {v} for me right now.",
            "I can't get enough of {v} lately.", "I'm obsessed with {v} at the moment.",
            "{V} is my {d} of choice now.",
        ],
        "drink": ["I've been drinking {v} every day."],
        "food": ["I could eat {v} every day."],
        "sport": ["I've taken up {v}."],
    },
    "fresh": {
        "location": [
            "We've just signed a lease on a flat in {v}.", "I'm officially a resident of {v} now.",
            "Finally got the keys to our new flat in {v}.",
            "We're all settled into our place in {v}.", "I've been in {v} for about a month now.",
            "The move to {v} is done and dusted.", "I'm renting a little place in {v} now.",
            "We're in {v} now, still getting used to it.",
        ],
        "employer": [
            "{v} made me an offer and I said yes.", "Today was my first day at {v}.",
            "I'm with {v} now.", "I've accepted a position at {v}.",
            "I left my old company for {v}.", "I start at {v} on Monday.",
            "I'm now on {v}'s payroll.",
        ],
        "job": [
            "I got my first gig as {av}.", "I'm now a full-time {v}.",
            "I earn my living as {av} these days.", "I qualified as {av} last month.",
            "Work-wise, I'm {av} at a small firm now.", "I've been taken on as {av}.",
            "Officially {av} as of this week!",
        ],
        "preference": [
            "I'm hooked on {v} at the moment.", "I've fallen for {v} in a big way.",
            "I'm all about {v} right now.", "{V} has become my absolute favourite {d}.",
            "Honestly, {v} is the best {d} there is.",
        ],
        "drink": ["I start every morning with {v} now.", "I've been living on {v} lately."],
        "food": ["I've been craving {v} all week.", "{V} is my comfort food these days."],
        "sport": ["I've been playing {v} three times a week.",
                  "I joined a {v} club and I'm loving it."],
    },
}
QUESTIONS: dict[str, dict[str, list[str]]] = {
    "tuned": {
        "location": ["Where does {p} live?", "Which city is {p} based in?",
                     "Where is {p} living now?"],
        "employer": ["Who does {p} work for?", "Which company does {p} work at?",
                     "What is {p}'s employer?"],
        "job": ["What is {p}'s job?", "What does {p} do for a living?",
                "What is {p}'s job title?"],
        "drink": ["What does {p} like to drink?", "What is {p}'s favourite drink?"],
        "food": ["What food does {p} like best?", "What is {p}'s favourite food?"],
        "sport": ["What sport is {p} into?", "What is {p}'s favourite sport?"],
    },
    "holdout": {
        "location": ["What city does {p} call home?", "Where is {p}'s home?"],
        "employer": ["Which company employs {p}?", "Where is {p} employed?"],
        "job": ["What is {p}'s occupation?", "What does {p} work as?"],
        "drink": ["Which drink does {p} enjoy most?", "What does {p} usually drink?"],
        "food": ["What does {p} like to eat?", "Which dish does {p} love most?"],
        "sport": ["Which sport does {p} play?", "What game does {p} enjoy most?"],
    },
    "fresh": {
        "location": ["Which city does {p} live in at the moment?", "Where has {p} moved to?"],
        "employer": ["Which firm is {p} with now?", "Where does {p} work these days?"],
        "job": ["What's {p}'s line of work?", "What kind of work does {p} do?"],
        "drink": ["What's {p}'s drink of choice?", "What does {p} drink most?"],
        "food": ["What is {p}'s go-to food?", "What does {p} love to eat?"],
        "sport": ["Which sport is {p} playing these days?", "What does {p} do for exercise?"],
    },
}
VALUES: dict[str, dict[str, list[str]]] = {
    "tuned": {
        "location": ["Lyon", "Porto", "Berlin", "Oslo", "Madrid", "Vienna", "Toronto", "Denver",
                     "Austin", "Dublin", "Edinburgh", "Melbourne", "Kyoto", "Prague", "New York",
                     "San Diego", "Buenos Aires", "Cape Town", "Rio de Janeiro"],
        "employer": ["Globex", "Initech", "Northwind Labs", "Acme Corp", "Bluefin Analytics",
                     "Copperleaf Health", "Vandelay Industries", "Hooli", "Stark Logistics",
                     "Pied Piper", "Umbrella Pharma", "Cyberdyne Systems", "Tyrell Robotics"],
        "job": ["nurse", "data analyst", "software engineer", "teacher", "product manager",
                "graphic designer", "pharmacist", "architect", "accountant", "electrician",
                "photographer", "chef", "journalist", "paramedic", "librarian", "translator"],
        "drink": ["coffee", "green tea", "espresso", "chai", "kombucha", "lemonade",
                  "hot chocolate", "cold brew", "sparkling water", "orange juice"],
        "food": ["sushi", "ramen", "tacos", "pizza", "curry", "dumplings", "falafel", "paella",
                 "lasagna", "pad thai"],
        "sport": ["tennis", "badminton", "squash", "volleyball", "basketball", "golf",
                  "softball", "hockey"],
    },
    "holdout": {
        "location": ["Valencia", "Gothenburg", "Krakow", "Wellington", "Halifax", "Tucson",
                     "Bruges", "Nagoya", "Hamburg", "Seville", "Tallinn", "Las Palmas",
                     "Porto Alegre", "Salt Lake City"],
        "employer": ["Monarch Bank", "Helix Biotech", "Redwood Studios", "Sterling & Cooper",
                     "Bank of Avalon", "Quantum Freight", "Lumen Energy", "Orbital Foods",
                     "Kestrel Games", "Ironbridge Capital"],
        "job": ["veterinarian", "copywriter", "physiotherapist", "carpenter", "economist",
                "sales director", "social worker", "pilot", "plumber", "lab technician",
                "flight attendant", "web developer"],
        "drink": ["matcha", "iced tea", "mint tea", "latte", "smoothie", "cider", "oat milk"],
        "food": ["burritos", "risotto", "pho", "biryani", "gnocchi", "ceviche", "bibimbap"],
        "sport": ["football", "rugby", "cricket", "baseball", "handball", "padel"],
    },
    "fresh": {
        "location": ["Marseille", "Bergen", "Ljubljana", "Auckland", "Winnipeg", "Savannah",
                     "Ghent", "Sapporo", "Leipzig", "Granada", "Riga", "Santa Fe",
                     "Kuala Lumpur", "San Sebastian"],
        "employer": ["Brightwater Insurance", "Falcon Ridge Software", "Maple & Finch",
                     "Tidewater Logistics", "Cobalt Robotics", "Nimbus Health",
                     "Greystone Partners", "Saffron Media", "Polaris Analytics"],
        "job": ["paralegal", "dental hygienist", "sound engineer", "data scientist",
                "occupational therapist", "bookkeeper", "landscape architect",
                "school counselor", "radiographer", "tour guide", "sous chef",
                "quantity surveyor"],
        "drink": ["oolong", "flat white", "yerba mate", "iced coffee", "rooibos",
                  "coconut water", "masala chai"],
        "food": ["tteokbokki", "empanadas", "laksa", "shakshuka", "pierogi", "moussaka",
                 "katsu curry", "poutine"],
        "sport": ["water polo", "ultimate frisbee", "pickleball", "field hockey",
                  "beach volleyball", "ping pong", "lacrosse"],
    },
}
# Chatter never names a value of either pool: its cities, companies and drinks are others.
DISTRACT = {
    "city": ["Rome", "Paris", "Athens", "Tokyo", "London", "Chicago", "Seoul", "Nairobi"],
    "company": ["Massive Dynamic", "Gringotts", "Wonka Sweets", "Dunder Mifflin"],
    "food": ["lentil soup", "a bagel", "fish and chips", "a salad"],
    "drink": ["cola", "ginger beer", "root beer"],
}
CHATTER = [
    "My sister moved to {city} last year.", "We spent a long weekend in {city}.",
    "My cousin just started working at {company}.", "I had {food} for lunch with a colleague.",
    "My brother works for {company} and hates it.", "My parents live in {city}.",
    "The weather has been grey all week.", "I finally fixed the leaking tap in the kitchen.",
    "We watched a documentary about deep sea creatures.", "I'm reading a novel about a lighthouse.",
    "The train was delayed again this morning.", "I repainted the bedroom a pale green.",
    "My brother is visiting next weekend.", "I've been learning to play the ukulele.",
    "We adopted a kitten named Pixel.", "I baked sourdough bread on Sunday.",
    "Our team won the pub quiz on Thursday.", "I need to renew my passport soon.",
    "The garden is full of tomatoes this year.", "I ran into an old classmate at the market.",
    "I live for the weekends honestly.", "I work at home on Fridays.",
    "My best friend relocated to {city} for her studies.", "Our neighbours are from {city}.",
    "I went to a wedding in {city} last weekend.", "My dad retired from {company} in May.",
    "I tried {drink} at a party and hated it.", "I cooked dinner for six people on Saturday.",
    "My phone screen cracked again.", "We are planning a trip to the mountains.",
    "I started a pottery class on Tuesdays.", "The heating broke in the middle of winter.",
    "I finally watched that long series everyone talks about.", "My niece turned five.",
    "I've been trying to get up earlier.", "A storm knocked down the fence.",
    "I signed up for a half marathon.", "I cleaned out the garage over the weekend.",
    "My grandmother taught me her soup recipe.", "I lost my keys twice this week.",
]
FRIEND = [
    "That's great news!", "Oh wow, congratulations!", "How do you like it so far?",
    "I'm so happy for you.", "I've lived in {city} my whole life.",
    "I still work at {company}.", "I've been drinking way too much {drink}.",
]
# The fresh set's own chatter: other people's places, employers, jobs, drinks and sports,
# hypotheticals, negations, questions and the speaker's passing whereabouts.
FRESH_DISTRACT = {
    "city": ["Naples", "Montreal", "Lagos", "Hanoi", "Zurich", "Phoenix", "Bilbao", "Perth"],
    "company": ["Soylent Corp", "Wayne Enterprises", "Oscorp", "Aperture Labs"],
    "food": ["a kebab", "a meat pie", "beans on toast", "a cheese toastie"],
    "drink": ["eggnog", "energy drinks", "tomato juice"],
    "job": ["lifeguard", "locksmith", "zookeeper", "tax advisor"],
    "sport": ["darts", "curling", "croquet"],
}
FRESH_CHATTER = [
    "I'd never move to {city}, it's far too hot for me.",
    "If I won the lottery I'd buy a flat in {city}.", "My flatmate just got a job at {company}.",
    "My wife has been a {job} for years.", "My boss is obsessed with {drink}.",
    "Our neighbour Carla is a {job} now.", "I'm not a fan of {drink} at all.",
    "I would never work for {company}, not after what I've heard.",
    "I'm thinking of applying to {company}.", "Maybe one day we'll retire to {city}.",
    "I was in {city} for a conference last week.",
    "I'm at the airport in {city} waiting for my connection.",
    "I'm in {city} for the weekend visiting friends.",
    "My husband prefers {drink}, but I can't stand it.",
    "Everyone at the office is drinking {drink} lately.",
    "My son wants to be a {job} when he grows up.", "I used to work at {company} years ago.",
    "We almost moved to {city} once.", "I could never be a {job}, I'd be terrible at it.",
    "I had {food} at my aunt's place.", "My sister is really into {sport} these days.",
    "I'd love to try {sport} one day.", "I'm trying to drink more water.",
    "I'm at my parents' place for the holidays.",
    "My old roommate relocated to {city} for work.",
    "I don't really like {food}, to be honest.", "The bus was packed this morning.",
    "I finally sorted out my tax return.", "We got a new sofa delivered on Tuesday.",
    "I burnt the toast again.", "My laptop battery is dying.",
    "The kids have a school play on Friday.", "I went for a long walk by the river.",
    "I'm on call all weekend, ugh.", "Work has been hectic since the merger.",
    "I've got a dentist appointment tomorrow.", "My uncle has lived in {city} for forty years.",
    "My cousin was hired by {company} straight out of college.",
    "Should I move to {city}, do you think?", "My partner is a huge fan of {food}.",
    "I'm definitely not a {sport} person.", "I'm watching the {sport} final tonight.",
]
FRESH_FRIEND = [
    "Congrats, that's huge!", "No way, tell me everything!", "That sounds like a big change.",
    "I just moved to {city} myself.", "I'm a {job} too, small world.",
    "I've switched to {drink} myself.", "I started at {company} last spring.",
]
# Each split's (distractor pools, the person's chatter, the friend's turns).
CHAT: dict[str, tuple[dict[str, list[str]], list[str], list[str]]] = {
    "tuned": (DISTRACT, CHATTER, FRIEND),
    "holdout": (DISTRACT, CHATTER, FRIEND),
    "fresh": (FRESH_DISTRACT, FRESH_CHATTER, FRESH_FRIEND),
}


@dataclass
class Person:
    name: str
    friend: str
    domain: str
    sessions: list[tuple[datetime, list[dict[str, str]]]] = field(default_factory=list)
    timeline: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    statements: list[tuple[str, str, str]] = field(default_factory=list)  # attr, value, text
    chatter: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Question:
    person: str
    attr: str
    kind: str  # "current" or "as_of"
    text: str
    value: str
    at: datetime | None = None


def with_article(v: str) -> str:
    return ("an " if v[0].lower() in "aeiou" else "a ") + v


def people(n: int, seed: int, split: str) -> list[Person]:
    rng = random.Random(seed)
    words, pools = WORDINGS[split], VALUES[split]
    distract, chatter, friend = CHAT[split]
    out = []
    for name in PEOPLE[:n]:
        p = Person(name, rng.choice(FRIENDS), rng.choice(["drink", "food", "sport"]))
        day = datetime(2024, 1, 8, 10, tzinfo=UTC) + timedelta(days=rng.randint(0, 60))
        dates = [day]
        while len(dates) < SESSIONS:
            dates.append(dates[-1] + timedelta(days=rng.randint(14, 40)))
        turns: list[list[str]] = [[] for _ in range(SESSIONS)]
        for attr in ATTRIBUTES:
            pool = pools[p.domain if attr == "preference" else attr]
            values = rng.sample(pool, rng.randint(3, 5))
            first = rng.randint(0, 2)
            at = [first, *sorted(rng.sample(range(first + 1, SESSIONS), len(values) - 1))]
            p.timeline[attr] = [(dates[s], v) for s, v in zip(at, values, strict=True)]
            forms = words[attr] + (words[p.domain] if attr == "preference" else [])
            for s, v in zip(at, values, strict=True):
                text = rng.choice(forms).format(v=v, V=v[0].upper() + v[1:], av=with_article(v),
                                                d=p.domain)
                p.statements.append((attr, v, text))
                turns[s].append(text)
        deck = rng.sample(chatter, len(chatter))  # no chatter line twice for one person
        for s, when in enumerate(dates):
            fill = {k: rng.choice(v) for k, v in distract.items()}
            chat = [deck.pop().format(**fill) for _ in range(rng.randint(2, 3))]
            p.chatter += chat
            said = [(p.name, t) for t in turns[s] + chat]
            said += [(p.friend, rng.choice(friend).format(**fill))
                     for _ in range(rng.randint(1, 2))]
            rng.shuffle(said)
            msgs = [{"name": who, "content": text, "id": f"{p.name}-s{s}-m{i}"}
                    for i, (who, text) in enumerate(said)]
            p.sessions.append((when, msgs))
        out.append(p)
    return out


def questions(ps: list[Person], seed: int, split: str) -> list[Question]:
    rng = random.Random(seed + 1)
    out = []
    for p in ps:
        for attr in ATTRIBUTES:
            forms = QUESTIONS[split][p.domain if attr == "preference" else attr]
            line = p.timeline[attr]
            out += [Question(p.name, attr, "current", f.format(p=p.name), line[-1][1])
                    for f in forms]
            for (t0, v), (t1, _) in itertools.pairwise(line):
                at = t0 + (t1 - t0) * rng.uniform(0.1, 0.9)
                out.append(Question(p.name, attr, "as_of", rng.choice(forms).format(p=p.name),
                                    v, at))
    return out


def states(text: str, value: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.I) is not None


def extraction(ps: list[Person]) -> tuple[dict[str, list[bool]], int]:
    """Per attribute, whether each change statement becomes a keyed fact of its value."""
    from underlay.memory.extract import extract

    keyed: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    false_keyed = 0
    for p in ps:
        for attr, value, text in p.statements:
            facts = extract(text, p.name)
            keyed[attr].append(any(f.key and (f.value or "").lower() == value.lower()
                                   for f in facts))
        false_keyed += sum(1 for c in p.chatter for f in extract(c, p.name) if f.key)
    return keyed, false_keyed


async def ask(ps: list[Person], qs: list[Question]) -> list[tuple[bool, bool, str]]:
    """Ingest every session, then ask: (first result states it, any does, first text)."""
    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.sdk.client import AsyncUnderlay
    from underlay.sdk.transports import LocalTransport

    out = []
    with tempfile.TemporaryDirectory() as home:
        kernel = await Kernel.open(Config.load(home=home))
        try:
            ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
            started = time.perf_counter()
            for p in ps:
                for when, msgs in p.sessions:
                    await ul.memory.add(msgs, user_id=p.name.lower(), timestamp=when, infer=True)
            print(f"ingested in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            for q in qs:
                found = await ul.memory.search(q.text, user_id=q.person.lower(), as_of=q.at,
                                               limit=LIMIT)
                texts = [m.memory for m in found.results]
                out.append((bool(texts) and states(texts[0], q.value),
                            any(states(t, q.value) for t in texts), texts[0] if texts else ""))
        finally:
            await kernel.close()
    return out


def pct(values: list[bool]) -> float:
    return round(100 * sum(values) / len(values), 1) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20, help=f"at most {len(PEOPLE)}")
    parser.add_argument("--seed", type=int, default=7)
    split_arg = parser.add_mutually_exclusive_group()
    split_arg.add_argument("--holdout", action="store_true", help="the wordings not tuned on")
    split_arg.add_argument("--fresh", action="store_true",
                           help="a third set, written before the extractor's last change")
    parser.add_argument("-v", "--verbose", action="store_true", help="list the misses")
    args = parser.parse_args()
    split = "holdout" if args.holdout else "fresh" if args.fresh else "tuned"
    ps = people(min(args.people, len(PEOPLE)), args.seed, split)
    qs = questions(ps, args.seed, split)
    keyed, false_keyed = extraction(ps)
    answers = asyncio.run(ask(ps, qs))
    rows: dict[str, dict[str, float]] = {}
    for attr in (*ATTRIBUTES, "all"):
        pick = [(q, a) for q, a in zip(qs, answers, strict=True) if attr in ("all", q.attr)]
        cur = [a for q, a in pick if q.kind == "current"]
        old = [a for q, a in pick if q.kind == "as_of"]
        rows[attr] = {
            "keyed_pct": pct([k for a, ks in keyed.items() if attr in ("all", a) for k in ks]),
            "current_first_pct": pct([a[0] for a in cur]),
            "current_found_pct": pct([a[1] for a in cur]),
            "as_of_pct": pct([a[0] for a in old]),
            "as_of_found_pct": pct([a[1] for a in old]),
            "questions": len(pick),
        }
    if args.verbose:
        for q, (first, _, got) in zip(qs, answers, strict=True):
            if not first:
                when = q.at.date().isoformat() if q.at else "now"
                print(f"MISS {q.kind:7s} {when} {q.text!r} want {q.value!r} got {got!r}",
                      file=sys.stderr)
        from underlay.memory.extract import extract

        for p in ps:
            for attr, value, text in p.statements:
                got = [(f.key, f.value) for f in extract(text, p.name)]
                if not any(k and (v or "").lower() == value.lower() for k, v in got):
                    print(f"UNKEYED {attr:10s} {text!r} -> {got}", file=sys.stderr)
    heads = ["keyed_pct", "current_first_pct", "current_found_pct", "as_of_pct",
             "as_of_found_pct", "questions"]
    print(f"{split} wordings, {len(ps)} people, seed {args.seed}")
    print(f"{'attribute':12s}" + "".join(f"{h:>19s}" for h in heads))
    for attr, r in rows.items():
        print(f"{attr:12s}" + "".join(f"{r[h]:>19}" for h in heads))
    print(f"chatter sentences keyed as the person's facts: {false_keyed}")
    figures = {
        "split": split, "seed": args.seed, "people": len(ps),
        **rows["all"],
        "current_questions": sum(q.kind == "current" for q in qs),
        "as_of_questions": sum(q.kind == "as_of" for q in qs),
        "false_keyed": false_keyed,
        "by_attribute": {a: rows[a] for a in ATTRIBUTES},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
