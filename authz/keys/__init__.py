"""The issuers' keys: what a key is and where keys come from (sources), fetching
them from an identity provider (fetch), and keeping them fresh (store)."""
