"""Real local servers (on 127.0.0.1) that stand in for remote services in integration tests."""
