"""Who the caller is: Supabase-compatible JWT verification and local accounts."""
