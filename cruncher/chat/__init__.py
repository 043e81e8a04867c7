"""The chatbot's parts: almanac, commands, rendering, posting."""
