"""TrustStack's Python client: ask the decision point before every tool call, report what the
tools returned, wait for a human on held calls, delegate narrower credentials to sub-agents."""

from .client import AsyncClient, Client
from .errors import (
    ApiError,
    ApprovalRefused,
    ApprovalTimeout,
    CallNotAllowed,
    Cancelled,
    Denied,
    TrustStackError,
    Unavailable,
)
from .models import ApprovalOutcome, Credential, Decision, FiredPolicy

__all__ = [
    "ApiError",
    "ApprovalOutcome",
    "ApprovalRefused",
    "ApprovalTimeout",
    "AsyncClient",
    "CallNotAllowed",
    "Cancelled",
    "Client",
    "Credential",
    "Decision",
    "Denied",
    "FiredPolicy",
    "TrustStackError",
    "Unavailable",
]
