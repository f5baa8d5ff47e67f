"""The real-time monitor daemon and offline replay."""
