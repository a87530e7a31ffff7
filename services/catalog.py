"""Every service of the system and the function that builds its app: what ``rj serve`` runs and what
``rj dev`` starts."""

from __future__ import annotations

SERVICES: dict[str, str] = {
    "referral": "services.referral.app:build",
    "consent": "services.consent.app:build",
    "scheduling": "services.scheduling.app:build",
    "notify": "services.notify.app:build",
    "privacy": "services.privacy.app:build",
    "api": "services.api.app:build",
    "audit": "services.audit.app:build",
}
