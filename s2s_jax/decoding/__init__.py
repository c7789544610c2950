"""From source ids to output ids and back to text: searches, the inference path, Translator, export."""
