pub fn parse_line(_l: &[u8]) -> super::Line<'_> {
    todo!()
}
