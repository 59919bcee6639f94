"""Retraining on alarms: the guards that decide whether an alarm may start a pipeline run
(``guard``) and their durable, atomic state (``guard_store``)."""
