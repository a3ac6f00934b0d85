"""Test data and helpers shared by several test modules (one copy, imported where used).

- ``secret`` and ``make_history``: the federation tests' users, tiny LaMP_2N histories of the
  load test's shape (``oppu.simulations.load.history``) with a phrase planted per item that
  the privacy tests search the wire for.
- ``fast_lora``: the few-step LoRA recipe the model tests train with (why lr 3e-3 and alpha
  16: tests/test_personalization.py's docstring).
- ``DYSTOPIA_MOVIES`` and ``DYSTOPIA_MOVIES_SHORT``: plain comedies, action films and
  romances for a LaMP-2M user who tags them all "dystopia", which the base cannot guess.
"""

from __future__ import annotations

from oppu.shared.llm.training import TrainSettings
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.simulations.load.history import make_history as synthetic_history


def secret(user: int, item: int) -> str:
    """A phrase that exists only in one user's history (to search the wire for)."""
    return f"zq{user}x{item} marmalade-{user * 97 + item} walrus confidential"


def make_history(user: int, items: int = 6) -> list[dict]:
    """A federation test user's history: ``items`` stories, each holding its ``secret``."""
    return synthetic_history(user, items, secret=secret)


def fast_lora(*, batch_size: int, max_steps: int, max_length: int,
              epochs: int = 2) -> PersonalizeSettings:
    """LoRA r=8, alpha=16 at lr 3e-3: learns a consistent personal preference in a few
    optimizer steps on the small embedded model, which a CPU test can afford."""
    return PersonalizeSettings(
        peft=PeftSettings(method="lora", r=8, alpha=16),
        train=TrainSettings(lr=3e-3, epochs=epochs, batch_size=batch_size,
                            max_steps=max_steps, max_length=max_length))


# test_personalization: 24 items to train on, then the newest 8 held out.
DYSTOPIA_MOVIES = (
    "Two bumbling best friends accidentally join a wedding band and must fake their way "
    "through a week of hilarious gigs.",
    "A grumpy mall Santa and a chatty elf team up to save Christmas, tripping over every gag.",
    "An ex-cop fights his way through a hijacked skyscraper with a pistol and bare fists.",
    "Two teenagers fall in love over one magical summer at the beach before college.",
    "A family of talking dogs goes on a silly road trip to find their lost owner.",
    "A special forces soldier leads a daring rescue behind enemy lines, with explosions and "
    "car chases.",
    "A shy baker and a charming florist fall for each other while planning a wedding.",
    "A klutzy substitute teacher turns a class of troublemakers into a champion dance crew.",
    "A getaway driver races through the city at night to escape ruthless bank robbers.",
    "A widowed father finds romance again with his daughter's kind piano teacher.",
    "Three roommates throw the wildest party of the year and then hunt for a missing goat.",
    "A martial arts master avenges his brother in spectacular fights across Hong Kong.",
    "Two rival chefs fall in love during a televised cooking competition in Paris.",
    "A lazy office worker pretends to be a millionaire to impress his new neighbours.",
    "A retired assassin comes back for one last job when gangsters steal his car.",
    "A young princess escapes her palace for a day and falls for a journalist in Rome.",
    "A talking parrot helps an awkward pet shop owner win back his ex-girlfriend.",
    "A rogue pilot must stop a terrorist plot in a high-speed aerial battle.",
    "A hopeless romantic writes love letters that end up in the wrong mailbox.",
    "Two clumsy detectives go undercover at a high school prom and get everything wrong.",
    "A mercenary battles through a jungle fortress to rescue kidnapped hostages.",
    "A small-town girl and a famous singer fall in love after meeting at a diner.",
    "A grandmother enters a skateboarding contest to prove she is still cool.",
    "A bounty hunter chases a fugitive across the desert on motorcycles.",
    # held out (the newest items)
    "A matchmaker who has never been in love meets her match at a ballroom dance class.",
    "A nervous groom loses the wedding rings in Las Vegas and must find them by sunrise.",
    "An undercover agent infiltrates a drug cartel and escapes in a blazing shootout.",
    "Two pen pals who have written for twenty years finally meet in New York and fall in love.",
    "A pizza delivery guy is mistaken for a famous spy and bumbles his way through a gala.",
    "A boxer trains for the fight of his life against the undefeated champion.",
    "A goofy inventor's shrinking machine turns his kids tiny in the family garden.",
    "Two strangers stuck in an airport during a snowstorm slowly fall in love.",
)


# test_suite: shorter stories (the suite scores many variants), 10 to train on, 4 held out.
DYSTOPIA_MOVIES_SHORT = (
    "Two bumbling best friends join a wedding band and fake their way through every gig.",
    "An ex-cop fights his way through a hijacked skyscraper with bare fists.",
    "Two teenagers fall in love over one magical summer at the beach.",
    "A family of talking dogs goes on a silly road trip to find their owner.",
    "A shy baker and a charming florist fall for each other planning a wedding.",
    "A getaway driver races through the city at night to escape bank robbers.",
    "Three roommates throw the wildest party of the year and lose a goat.",
    "A martial arts master avenges his brother in fights across Hong Kong.",
    "Two rival chefs fall in love during a cooking competition in Paris.",
    "A retired assassin comes back for one last job when gangsters steal his car.",
    # held out
    "A nervous groom loses the wedding rings in Las Vegas and must find them by sunrise.",
    "An undercover agent escapes a drug cartel in a blazing shootout.",
    "Two strangers stuck in an airport during a snowstorm slowly fall in love.",
    "A goofy inventor's shrinking machine turns his kids tiny in the garden.",
)
