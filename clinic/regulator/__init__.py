"""The regulators' data interface (2018 measures Art. 24), records retention (2022
supervision rules), data-security and adverse-event incidents (Art. 20), and the
operations on encryption keys at rest."""
