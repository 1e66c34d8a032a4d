"""A tiny knowledge base of (title, text) passages used across the suite."""

PASSAGES = [
    ("Aaron", "Aaron is a prophet, high priest, and the brother of Moses in the Abrahamic religions."),
    ("Bavaria", "Bavaria is a state of Germany. Its ISO 3166-2 code is DE-BY."),
    ("Berlin", "Berlin is the capital and largest city of Germany by both area and population."),
    ("Paris", "Paris is the capital and most populous city of France."),
    ("Python", "Python is a high-level, general-purpose programming language created by Guido van Rossum."),
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601."),
    ("Tokyo", "Tokyo is the capital of Japan and the most populous metropolitan area in the world."),
    ("Nile", "The Nile is a major north-flowing river in northeastern Africa."),
    ("Everest", "Mount Everest is Earth's highest mountain above sea level, located in the Himalayas."),
    ("Amazon", "The Amazon rainforest covers much of the Amazon basin of South America."),
    ("Ontario", "Ontario is a province of Canada. Its ISO 3166-2 code is CA-ON."),
    ("Texas", "Texas is a state of the United States. Its ISO 3166-2 code is US-TX."),
]
