"""cruncher: automated data processing for high-contrast imaging surveys.

A processing backend of threads (network interface, file processor, reduction thread,
deduplicating PSF-subtraction queue) driven by instructors (realtime scanner, reprocessor,
MPI controller, chatbot), after the GPIES Data Cruncher (Wang et al. 2018, JATIS 4, 018002).
"""

__version__ = "0.1.0"
