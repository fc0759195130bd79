//! `tgingest accounts …`: a thin client of the admin API.
