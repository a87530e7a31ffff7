"""The notify service: tells participants and facilitators what they need, once, safely, on their channel."""
