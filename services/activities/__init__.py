"""The activities service: activities and shifts, sign-ups with capacity and a waitlist,
reminders, attendance and the hours it proves."""
