"""The graph on record: links (assertions no contact holds), reads, and why-paths."""
