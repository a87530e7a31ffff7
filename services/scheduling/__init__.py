"""The scheduling service: books meetings on ready cases, records agreements and their completion, closes cases."""
