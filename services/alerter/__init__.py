"""The alerter service: evaluates alert rules over the scorer's figures and notifies receivers."""
