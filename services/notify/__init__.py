"""The notify service: tells each participant and facilitator what they need, once, safely, on their channel."""
