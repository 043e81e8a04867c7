"""Instructors decide what to process: the realtime scanner, the reprocessor, the MPI controller
and the chatbot. They talk to backends only through instructions."""
