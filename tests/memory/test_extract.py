"""The deterministic extractor: which sentences become facts, and which facts are keyed."""

from __future__ import annotations

import pytest

from underlay.memory.extract import asks_for, entities, extract


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        # where the speaker lives
        ("I moved to Berlin last month.", "ana/location", "Berlin"),
        ("I live in New York now", "ana/location", "New York"),
        ("I've just relocated to Porto.", "ana/location", "Porto"),
        ("We relocated to Cape Town in the spring.", "ana/location", "Cape Town"),
        ("I'm based in Oslo these days.", "ana/location", "Oslo"),
        ("Just moved to Rio de Janeiro!", "ana/location", "Rio de Janeiro"),
        ("We finally settled in Kyoto.", "ana/location", "Kyoto"),
        ("I've been living in Dublin since the summer.", "ana/location", "Dublin"),
        ("Home is Lyon now.", "ana/location", "Lyon"),
        ("Lyon is home now.", "ana/location", "Lyon"),
        ("Guess what, we moved back to Madrid.", "ana/location", "Madrid"),
        ("We sold the house and moved to Lisbon.", "ana/location", "Lisbon"),
        ("I live in the Bay Area now.", "ana/location", "Bay Area"),
        ("My sister and I moved to Rome.", "ana/location", "Rome"),
        # who the speaker works for
        ("I started working at Acme Corp in 2020.", "ana/employer", "Acme Corp"),
        ("I now work for Globex.", "ana/employer", "Globex"),
        ("Just started a new job at Northwind Labs.", "ana/employer", "Northwind Labs"),
        ("I joined Initech last week.", "ana/employer", "Initech"),
        ("I got hired by Sterling & Cooper.", "ana/employer", "Sterling & Cooper"),
        ("I've been working at Pied Piper since March.", "ana/employer", "Pied Piper"),
        ("My new employer is Bank of Avalon.", "ana/employer", "Bank of Avalon"),
        ("I accepted an offer from Hooli.", "ana/employer", "Hooli"),
        ("I landed a job with Umbrella Pharma.", "ana/employer", "Umbrella Pharma"),
        ("I'm employed at Vandelay Industries.", "ana/employer", "Vandelay Industries"),
        # "I'm at X" after a change of job
        ("I switched jobs and I'm at Lumen Energy now.", "ana/employer", "Lumen Energy"),
        ("Changed careers, and now I'm at Bank of Avalon.", "ana/employer", "Bank of Avalon"),
        ("I left my old company and I am at Helix Biotech.", "ana/employer", "Helix Biotech"),
        # the speaker's job
        ("I got a job as a data analyst.", "ana/job", "data analyst"),
        ("I am a software engineer.", "ana/job", "software engineer"),
        ("I'm working as an electrician now.", "ana/job", "electrician"),
        ("My new role is product manager.", "ana/job", "product manager"),
        ("I've been promoted to head chef.", "ana/job", "head chef"),
        ("I'm a librarian now.", "ana/job", "librarian"),
        ("I work as a nurse at Mercy Hospital.", "ana/job", "nurse"),
        ("My job title is graphic designer these days.", "ana/job", "graphic designer"),
        ("I'm a photographer now.", "ana/job", "photographer"),
        # preferences: one key per domain, whatever the wording
        ("My favorite food is sushi.", "ana/favourite food", "sushi"),
        ("I prefer tea these days.", "ana/favourite drink", "tea"),
        ("I prefer tea to coffee.", "ana/favourite drink", "tea"),
        ("Lately I've been into chai.", "ana/favourite drink", "chai"),
        ("I'm really into sparkling water now.", "ana/favourite drink", "sparkling water"),
        ("My go-to drink is cold brew now.", "ana/favourite drink", "cold brew"),
        ("My favourite beverage is espresso.", "ana/favourite drink", "espresso"),
        ("I mostly drink green tea these days.", "ana/favourite drink", "green tea"),
        ("I've been eating a lot of pad thai lately.", "ana/favourite food", "pad thai"),
        ("I play table tennis most weekends now.", "ana/favourite sport", "table tennis"),
        ("Tennis is my new favourite sport.", "ana/favourite sport", "Tennis"),
        ("I've switched to kombucha.", "ana/favourite drink", "kombucha"),
        ("I prefer working from home.", "ana/preference", "working from home"),
        # the speaker's superlative, subject unsaid
        ("Nothing beats matcha for me right now.", "ana/favourite drink", "matcha"),
        ("Honestly, nothing beats a cup of mint tea.", "ana/favourite drink", "mint tea"),
        ("You can't beat pho on a cold day.", "ana/favourite food", "pho"),
        ("Nothing compares to cricket.", "ana/favourite sport", "cricket"),
        ("There's nothing like a bowl of ramen.", "ana/favourite food", "ramen"),
        # a modal hyperbole of habit: the domain comes from the verb
        ("I could eat bibimbap every day.", "ana/favourite food", "bibimbap"),
        ("I could happily drink iced tea all day long.", "ana/favourite drink", "iced tea"),
        ("Honestly I could play squash every single day.", "ana/favourite sport", "squash"),
        ("I could eat jollof rice every day.", "ana/favourite food", "jollof rice"),
        # a measure word is not the value
        ("My go-to drink is a cup of tea.", "ana/favourite drink", "tea"),
        # anything said as "my X is Name"
        ("My dog is Rex.", "ana/dog", "Rex"),
    ],
)
def test_keyed_facts(text: str, key: str, value: str) -> None:
    [fact] = extract(text, None, "Ana")
    assert (fact.key, fact.value, fact.retract, fact.text) == (key, value, False, text)


@pytest.mark.parametrize(
    "text",
    [
        "I live for the weekends.",  # not a place
        "I work at home.",  # not an employer
        "I work at home on Fridays.",
        "I work with Sarah.",
        "My sister moved to Rome.",  # someone else's move
        "My parents live in Chicago.",
        "She works for Globex.",
        "He joined Initech last week.",
        "My cousin just started working at Globex.",
        "My kids play football every weekend.",
        "I lived in Paris for ten years.",  # past
        "I used to live in Paris.",
        "I was born in Seoul.",
        "I'd love to live in Paris.",  # not real
        "If I moved to Paris, I'd be happier.",
        "I'm thinking about moving to Tokyo.",
        "We visited Lisbon in June.",
        "I helped my brother move to Denver.",
        "I joined a gym.",
        "I joined Sarah for dinner.",
        "I moved to a bigger flat.",  # not a proper name
        "I'm based in the city centre.",
        "I'm a big fan of jazz.",  # not an occupation
        "I'm a morning person.",
        "My job is a nightmare.",
        "My role is to help people.",
        "I've switched to Linux.",  # no known domain
        "My brother is visiting next weekend.",  # "my X is" with no name
        "My dad says nothing beats a cold beer.",  # someone else's superlative
        "Nothing beats coffee, my dad says.",
        "According to Sam, nothing beats rugby.",
        "Lyon is home now, my sister says.",
        "Nothing beats a good night's sleep.",  # no known domain
        "I can't beat my brother at tennis.",  # not a superlative
        "If I could eat pizza every day, I would.",  # not real
        "My son could eat pizza every day.",  # someone else's habit
        "I could never eat sushi every day.",  # negated
        "I couldn't drink coffee every day.",
        "I could eat a horse.",  # no habit
        "I'm at Heathrow now.",  # "I'm at X" without a change of job: a whereabouts
        "I switched jobs but I'm at home today.",
        "My wife switched jobs and she's at Globex now.",
        "I switched jobs and I'm with Sarah now.",  # "with" may be a person
    ],
)
def test_sentences_that_are_not_the_speakers_keyed_fact(text: str) -> None:
    [fact] = extract(text, "Ana")
    assert (fact.key, fact.value, fact.retract) == (None, None, False)


def test_wordings_of_one_attribute_share_its_key() -> None:
    said = ["My favourite drink is coffee.", "These days I prefer green tea.",
            "Lately I've been into matcha.", "I mostly drink espresso now.",
            "Nothing beats chai for me.", "I could drink kombucha all day."]
    assert {f.key for s in said for f in extract(s, "Ana")} == {"ana/favourite drink"}
    moved = ["I moved to Lyon.", "We relocated to Porto.", "I'm based in Oslo these days."]
    assert {f.key for s in moved for f in extract(s, "Ana")} == {"ana/location"}


def test_speaker_attribution_and_dropped_chatter() -> None:
    facts = extract("Hey Mel! How are you? I went to a support group in Boston.", "Caroline")
    assert [f.text for f in facts] == ["Caroline: I went to a support group in Boston."]
    assert facts[0].entities == ("Caroline", "Boston")


def test_retraction_names_the_key_it_ends() -> None:
    [fact] = extract("I no longer live in Paris.", None, "ana")
    assert (fact.key, fact.retract) == ("ana/location", True)
    [quit_] = extract("I don't work for Globex any more.", None, "ana")
    assert (quit_.key, quit_.retract) == ("ana/employer", True)
    [plain] = extract("We stopped the old build farm.", None, "ana")
    assert plain.key is None and not plain.retract


@pytest.mark.parametrize(
    ("question", "attributes"),
    [
        ("Where does Ana live?", ("location",)),
        ("Which city is Ana based in?", ("location",)),
        ("Who does Ana work for?", ("employer",)),
        ("Which company employs Ana?", ("employer",)),
        ("Where does Ana work?", ("employer",)),
        ("Where is Ana working these days?", ("employer",)),
        ("Where did Ana work out?", ()),
        ("What does Ana do for a living?", ("job",)),
        ("What is Ana's job title?", ("job",)),
        ("What does Ana like to drink?", ("favourite drink", "preference")),
        ("What is Ana's favourite food?", ("favourite food", "preference")),
        ("What sport is Ana into?", ("favourite sport", "preference")),
        ("What does Ana prefer?", ("preference",)),
        ("When did Ana adopt the cat?", ()),
    ],
)
def test_asks_for_names_the_attributes_of_a_question(
    question: str, attributes: tuple[str, ...]
) -> None:
    assert asks_for(question) == attributes


def test_entities_skip_sentence_words() -> None:
    assert entities("Yesterday Maria and John Smith met in New York.", "Ana") == (
        "Ana", "Maria", "John Smith", "New York")
