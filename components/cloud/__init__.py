"""Running the steps in Google Cloud: KFP pipeline definitions, schedules, Vertex AI submission, Dataflow jobs, run context."""
