"""CryptoBot (Crypto Pay API) payments."""
