"""The synthetic corpus of bench/memory_scale.py: LoCoMo-like turns, scopes, questions and
realistic vectors (noisy mixes of real ones). Deterministic from a seed; see the
benchmark's docstring for the method."""

from __future__ import annotations

import bisect
import itertools
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from underlay.memory import retrieval
from underlay.memory.embedding import model_dir

CHUNK = 20

# -- corpus --------------------------------------------------------------------------------

NAMES = (
    "Caroline Melanie Jordan Maya Gina Jon John Maria Tim Audrey Andrew Nate Joanna Evan Sam "
    "Deborah Jolene Calvin Dave James Priya Omar Lena Marco Sofia Hiro Aisha Ben Clara Diego "
    "Elena Felix Grace Hugo Iris Jamal Kira Liam Mei Nora Oscar Paula Quinn Rosa Theo Uma "
    "Victor Wendy Yusuf Zoe Nadia Ravi Hannah Leo Ingrid Tariq Chloe Mateo Ada Bruno Selma"
).split()
ACTIVITIES = (
    "hiking|painting|pottery|running|camping|baking bread|swimming|playing guitar|yoga|"
    "volunteering at the shelter|rock climbing|photography|gardening|kayaking|"
    "reading mystery novels|writing poetry|learning Spanish|cycling|skiing|fishing|knitting|"
    "dancing salsa|cooking Thai food|birdwatching|surfing|playing chess|woodworking|"
    "playing the violin|board games|meditation|journaling|running marathons|sketching|"
    "playing basketball|coding side projects|restoring old furniture|making candles|"
    "playing the piano|bouldering|scuba diving|ice skating|calligraphy|stand-up comedy"
).split("|")
PLACES = (
    "the beach|the lake|the museum|Paris|Tokyo|the park|the farmers market|the library|"
    "the mountains|a concert|the zoo|the art gallery|the community center|Yosemite|"
    "the coffee shop down the street|my parents' house|Chicago|the gym|the animal shelter|"
    "a bookstore|Lisbon|the botanical garden|a jazz club|the aquarium|Seattle|the old town|"
    "a pottery studio|the campsite|Barcelona|the youth center|a food festival|the stadium"
).split("|")
FOODS = (
    "pizza|sushi|tacos|ramen|a chocolate cake|pancakes|curry|homemade pasta|dumplings|"
    "a vegan burger|pho|banana bread|paella|apple pie|falafel|barbecue"
).split("|")
THINGS = (
    "a new camera|a painting of a sunset|a vintage guitar|a cookbook|running shoes|a tent|"
    "a sketchbook|a bike|a telescope|a set of brushes|a pottery wheel|a record player|"
    "a yoga mat|a kayak|a drone|a typewriter|hiking boots|a sewing machine|a keyboard"
).split("|")
EVENTS = (
    "an LGBTQ support group|a charity run|a job interview|my sister's wedding|the school play|"
    "a team meeting|a pride parade|a book club|a fundraiser for the homeless shelter|"
    "a dance competition|a photography workshop|a parent-teacher meeting|a music festival|"
    "a career fair|a family reunion|a hackathon|a cooking class|an open mic night"
).split("|")
FEELINGS = (
    "so inspiring|really relaxing|a bit stressful|amazing|exhausting but worth it|so much fun|"
    "kind of scary|incredibly peaceful|super rewarding|a little overwhelming|unforgettable|"
    "pretty boring honestly|really emotional|such a blast"
).split("|")
TIMES = (
    "yesterday|last weekend|last Friday|two weeks ago|this morning|last summer|in May|"
    "last night|a few days ago|over the holidays|last month|on Sunday|in the spring"
).split("|")
RELATIONS = (
    "kids|mom|dad|brother|sister|partner|coworkers|neighbours|best friend|grandma|"
    "roommate|cousin|husband|wife|son|daughter"
).split("|")
OPENERS = (
    "Hey {other}!|Wow, {other}!|That's great!|Oh nice.|Thanks, {other}!|Haha, totally.|"
    "Aw, that's sweet.|Good to hear from you!|No way!|I know, right?"
).split("|")
STATEMENTS = [
    "I went to {place} {time} and it was {feeling}.",
    "{Time} I tried {activity} for the first time, it was {feeling}.",
    "My {rel} and I have been {activity} a lot lately.",
    "I just bought {thing} so I can get more into {activity}.",
    "I've been so busy with {w1} at work, but {activity} keeps me sane.",
    "Did you take any photos at {place}? I'd love to see them.",
    "I'm thinking about signing up for {event} next month.",
    "We had {food} at {place} {time}, the {w1} there was {feeling}.",
    "Honestly {activity} helps me deal with {w1} and stress.",
    "I went to {event} {time} and met {name3}, who knows a lot about {w1}.",
    "My {rel} gave me {thing} for my birthday, I was so happy!",
    "We're planning a trip to {place} with my {rel} to go {activity}.",
    "I finally finished my project about {w1} and {w2}, it took months.",
    "{name3} told me that {place} is the best spot for {activity}.",
    "I started volunteering with {name3} at {place} helping with {w1}.",
    "It reminds me of when we went {activity} near {place}.",
    "I've been reading a book about {w1}, it changed how I think about {w2}.",
    "My {rel} is learning {activity} now, it's {feeling} to watch.",
    "I adopted a puppy named {pet} {time}, she loves {place}.",
    "I keep thinking about {event}, it was {feeling}.",
    "Work has been crazy, we're launching something about {w1} soon.",
    "I'm saving up for {thing} so I can start {activity}.",
    "I made {food} for my {rel} {time} and they loved it.",
    "We went to see a show about {w1} at {place}, it was {feeling}.",
]
QUESTIONS_TAIL = (
    "How about you?|What have you been up to?|Any plans for the weekend?|"
    "What do you think about {w1}?|Have you ever tried {activity}?|How's your {rel} doing?|"
    "We should go to {place} together sometime!|Let me know what you think."
).split("|")
QUESTIONS = [
    "When did {person} go to {place}?",
    "What did {person} do at {place}?",
    "When did {person} start {activity}?",
    "What does {person} think about {activity}?",
    "How did {person} feel about {event}?",
    "What did {person} buy to get into {activity}?",
    "Who did {person} meet at {event}?",
    "What did {person}'s {rel} give {person} for the birthday?",
    "Where is {person} planning to travel with the {rel}?",
    "What book is {person} reading about {w1}?",
    "What is the name of {person}'s puppy?",
    "What food did {person} make for the {rel}?",
    "Why does {person} like {activity}?",
    "Which events has {person} attended?",
    "What project about {w1} did {person} finish?",
    "Where does {person} volunteer?",
    "What is {person} saving up for?",
    "When did {person} and {other} go {activity}?",
]


class Corpus:
    """Deterministic LoCoMo-like turns and questions (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        vocab = json.loads((model_dir() / "tokenizer.json").read_text())["model"]["vocab"]
        words = [
            w
            for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])
            if w.isascii() and w.isalpha() and len(w) > 2 and w not in retrieval.STOPWORDS
        ]
        self.words = words  # frequency order: Zipf by rank gives realistic document counts
        self.cum = list(itertools.accumulate(1.0 / (r + 20) for r in range(len(words))))
        self.pets = [w.capitalize() for w in words[3000:3060]]

    def word(self) -> str:
        return self.words[bisect.bisect(self.cum, self.rng.random() * self.cum[-1])]

    def _fill(self, template: str, other: str, **extra: str) -> str:
        r = self.rng
        time_ = r.choice(TIMES)
        return template.format(
            other=other,
            place=r.choice(PLACES),
            activity=r.choice(ACTIVITIES),
            food=r.choice(FOODS),
            thing=r.choice(THINGS),
            event=r.choice(EVENTS),
            feeling=r.choice(FEELINGS),
            time=time_,
            Time=time_[0].upper() + time_[1:],
            rel=r.choice(RELATIONS),
            pet=r.choice(self.pets),
            name3=r.choice(NAMES),
            w1=self.word(),
            w2=self.word(),
            **extra,
        )

    def turn(self, speaker: str, other: str) -> str:
        r = self.rng
        parts = []
        if r.random() < 0.35:
            parts.append(self._fill(r.choice(OPENERS), other))
        parts.append(self._fill(r.choice(STATEMENTS), other))
        if r.random() < 0.5:
            parts.append(self._fill(r.choice(STATEMENTS), other))
        if r.random() < 0.4:
            parts.append(self._fill(r.choice(QUESTIONS_TAIL), other))
        return f"{speaker}: {' '.join(parts)}"

    def question(self, people: list[str]) -> str:
        person, other = self.rng.sample(people, 2)
        if self.rng.random() < 0.5:
            person = people[0]  # the scope's owner is asked about most
        return self._fill(self.rng.choice(QUESTIONS), other, person=person)


@dataclass
class Scope:
    """One user's memories: an owner, friends, and sessions of CHUNK turns."""

    org: str
    user_id: str
    size: int
    people: list[str]
    tag: str

    def turns(self, corpus: Corpus) -> list[tuple[str, str, str, int]]:
        """(text, speaker, chunk id, seq) for every memory of the scope, in order."""
        out = []
        owner, friends = self.people[0], self.people[1:]
        for c in range(0, self.size, CHUNK):
            friend = corpus.rng.choice(friends)
            chunk = f"chk_{self.tag}_{c // CHUNK:06d}"
            for seq in range(min(CHUNK, self.size - c)):
                speaker, other = (owner, friend) if seq % 2 == 0 else (friend, owner)
                out.append((corpus.turn(speaker, other), speaker, chunk, seq))
        return out


def questions(corpus: Corpus, scope: Scope, n: int) -> list[str]:
    return [corpus.question(scope.people) for _ in range(n)]


# -- vectors -------------------------------------------------------------------------------


def synthetic(bank: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors near real ones: noisy convex combinations of two bank rows."""
    a = bank[rng.integers(0, len(bank), n)]
    b = bank[rng.integers(0, len(bank), n)]
    w = rng.uniform(0.55, 0.95, (n, 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.35 / np.sqrt(bank.shape[1]), (n, bank.shape[1]))
    v = (w * a + (1 - w) * b + noise).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def mean_cosine(v: np.ndarray, rng: np.random.Generator, pairs: int = 20_000) -> float:
    i, j = rng.integers(0, len(v), pairs), rng.integers(0, len(v), pairs)
    keep = i != j
    return float(np.mean(np.sum(v[i[keep]] * v[j[keep]], axis=1)))


# -- building a store ----------------------------------------------------------------------
