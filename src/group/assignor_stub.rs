//! TEMPORARY stand-in until assignor.rs lands.
use std::collections::{BTreeMap, BTreeSet};
pub type TopicPartition = (String, u32);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    Range,
    RoundRobin,
    CooperativeSticky,
}
#[derive(Clone, Debug)]
pub struct MemberInput<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub topics: &'a BTreeSet<String>,
    pub previous: &'a BTreeSet<TopicPartition>,
}
pub fn assign(
    _strategy: Strategy,
    members: &[MemberInput<'_>],
    partition_counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut members: Vec<&MemberInput<'_>> = members.iter().collect();
    members.sort_by_key(|m| (m.instance_id.unwrap_or(m.member_id), m.member_id));
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.to_string(), BTreeSet::new()))
        .collect();
    let mut turn = 0usize;
    for (topic, &count) in partition_counts {
        for p in 0..count {
            let subscribed: Vec<&&MemberInput<'_>> = members
                .iter()
                .filter(|m| m.topics.contains(topic))
                .collect();
            if subscribed.is_empty() {
                continue;
            }
            let m = subscribed[turn % subscribed.len()];
            turn += 1;
            out.get_mut(m.member_id).unwrap().insert((topic.clone(), p));
        }
    }
    out
}
