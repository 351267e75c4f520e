"""`python -m exporter bench`'s measurements: measure (speed, memory and accuracy of bundles, side by side), energy
(meters and estimates) and report (Markdown and plots rendered from the JSON)."""
