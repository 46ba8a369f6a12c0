-- Ends a session.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of its id
-- Reply    1 when it was live, else 0
-- Clock    none
return end_sessions({ARGV[1]})
