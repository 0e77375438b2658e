"""Rivet's faces: the `rivet` command line, the Textual app and the headless renderer. No export logic here."""
