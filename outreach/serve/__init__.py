"""``outreach serve``: the web application on the same store as the command line.

* public, no sign-in: the List-Unsubscribe URL (RFC 8058 one-click POST, and a page for a
  GET), the faces it shows and the style sheet (optout.py, public.py);
* the liaisons' desk, signed in: coverage and whom next, replies from their mailbox,
  campaigns with previews, a form to log a meeting; the technical person sees every
  liaison and the report (accounts.py, auth.py, desk.py, desk_data.py, forms.py).

``app.create_app`` builds the Starlette application; ``run.serve`` runs it under uvicorn.
"""
