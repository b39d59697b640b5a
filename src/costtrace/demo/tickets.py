"""The demo's workload: simulated support tickets of Northwind Outfitters, an online store for outdoor gear.

A ticket is a customer's thread, the order's total and the help-center articles retrieved for it, drawn
from ``random.Random(seed)``: the same seed gives the same tickets. Its tier (1 routine, 2 involved, 3 hard)
sets how long the thread is, how many articles come with it, and how often the simulated models of
:mod:`costtrace.demo.server` get it wrong.

Example:
    >>> from costtrace.demo.tickets import make_tickets
    >>> [t.id for t in make_tickets(2, seed=1)]
    ['T-00001', 'T-00002']
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from decimal import Decimal

from costtrace.demo import server

__all__ = ["ARTICLES", "CUSTOMERS", "TIER_NAMES", "TIER_SHARE", "Ticket", "make_tickets"]

TIER_SHARE: dict[int, float] = {1: 0.55, 2: 0.30, 3: 0.15}
"""Share of routine (1), involved (2) and hard (3) tickets in the workload."""
TIER_NAMES = {1: "routine", 2: "involved", 3: "hard"}

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")

_MESSAGES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my last order and I only placed it once.",
        "My invoice shows a subscription fee I never signed up for.",
        "The amount charged to my card is higher than the price at checkout.",
    ),
    "shipping": (
        "My package still has not arrived and the tracking page has not changed for days.",
        "The delivery was marked as done but there is no package at my door.",
        "The tracking number you sent does not work on the carrier's website.",
    ),
    "account": (
        "I cannot log in: the password reset e-mail never arrives.",
        "My login fails since I changed phones and the two-factor code is rejected.",
        "Someone changed my password and I can no longer access my account.",
    ),
    "returns": (
        "I want to return the jacket, it is the wrong size. Can I get an exchange?",
        "The stove arrived damaged and I would like to return it.",
        "I sent the return two weeks ago and have heard nothing since.",
    ),
}
_FOLLOW_UPS = (
    "I already wrote about this last week and nobody answered.",
    "Here is some more context: I ordered on a weekday and paid by card.",
    "I also asked in the chat and was told to write here instead.",
    "Please read the whole thread before answering, this is the third time I explain it.",
    "To be clear, I need an answer to both of my questions.",
    "The order number is in my first message.",
)
_ARTICLE_TOPICS = (
    "Refunds and how long they take",
    "Double charges and pending authorisations",
    "Subscriptions: changes and cancellations",
    "Tracking a parcel",
    "Lost and late deliveries",
    "Resetting your password",
    "Two-factor authentication",
    "Account security and takeovers",
    "Returns and exchanges",
    "Damaged items",
    "Return labels",
    "Store credit and gift cards",
)
_ARTICLE_SENTENCES = (
    "Refunds go back to the original payment method within five business days of approval.",
    "A pending authorisation is not a charge and disappears from the statement within a week.",
    "Agents may refund up to the order total, capped at fifty dollars per ticket.",
    "Orders ship from the nearest warehouse and carriers update tracking once a day.",
    "A parcel is considered lost after ten business days without a tracking update.",
    "Password reset links expire after one hour and can be requested again at any time.",
    "Two-factor resets are handled by the security team only, after an identity check.",
    "Change-of-mind returns are free within thirty days and receive a prepaid label.",
    "Damaged items are refunded or replaced without a return, based on a photo.",
    "Exchanges ship once the returned item is scanned by the carrier.",
    "Store credit never expires and can be combined with a discount code.",
    "Customers must never be asked for a full card number or a password.",
)


def _make_articles() -> tuple[str, ...]:
    """The help center: one fixed set of articles (drawn from ``random.Random(0)``, whatever the seed)."""
    rng = random.Random(0)
    articles = []
    for topic in _ARTICLE_TOPICS:
        sentences = [rng.choice(_ARTICLE_SENTENCES) for _ in range(rng.randint(14, 30))]
        articles.append(f"# {topic}\n" + " ".join(sentences))
    return tuple(articles)


ARTICLES = _make_articles()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One support ticket: its triage tier, the thread, the order, and the articles retrieved for it."""

    id: str
    customer: str
    tier: int
    """1 routine, 2 involved, 3 hard (longer threads, more articles, more room for a wrong answer)."""
    category: str
    """The right ``category`` of the answer: the label the validator checks against."""
    order_total_usd: Decimal
    message: str
    articles: tuple[int, ...]
    """Indexes into :data:`ARTICLES`."""

    @property
    def refund_limit_usd(self) -> Decimal:
        """The refund policy: at most the order's total and at most the agent limit."""
        return min(self.order_total_usd, server.AGENT_REFUND_LIMIT_USD)

    def user_message(self) -> str:
        """The first user message: the ticket and its articles, as the JSON the system prompt describes."""
        ticket = {
            "id": self.id,
            "customer": self.customer,
            "tier": self.tier,
            "order_total_usd": str(self.order_total_usd),
            "message": self.message,
        }
        return json.dumps({"ticket": ticket, "articles": [ARTICLES[i] for i in self.articles]})


def make_tickets(n: int, seed: int) -> list[Ticket]:
    """``n`` tickets drawn from ``random.Random(seed)``: the same seed gives the same tickets.

    Example:
        >>> make_tickets(2, seed=1) == make_tickets(2, seed=1)
        True
    """
    rng = random.Random(seed)
    tiers, weights = list(TIER_SHARE), list(TIER_SHARE.values())
    tickets = []
    for i in range(1, n + 1):
        tier = rng.choices(tiers, weights)[0]
        category = rng.choice(list(_MESSAGES))
        parts = [rng.choice(_MESSAGES[category])]
        parts += [
            rng.choice(_FOLLOW_UPS) for _ in range(rng.randint(0, 1) if tier == 1 else rng.randint(tier, 3 * tier))
        ]
        if tier > 1:
            parts.append(rng.choice(_MESSAGES[category]))  # the customer restates the problem
        n_articles = rng.randint(tier, tier + 2)
        tickets.append(
            Ticket(
                id=f"T-{i:05d}",
                customer=rng.choice(CUSTOMERS),
                tier=tier,
                category=category,
                order_total_usd=Decimal(rng.randint(1_500, 18_000)) / 100,
                message="\n\n".join(parts),
                articles=tuple(rng.sample(range(len(ARTICLES)), n_articles)),
            )
        )
    return tickets
