//! Partition assignors: how a consumer group spreads the partitions of the topics its members
//! subscribe to over those members. The group coordinator calls [`assign`] on every rebalance;
//! it is a pure function (no state, no IO) run on the coordinator's shard.
//!
//! # Strategies
//!
//! - [`Strategy::Range`]: per topic, the members subscribed to it, in member order, take
//!   contiguous blocks of its partitions; the first `count % subscribers` take one extra.
//! - [`Strategy::RoundRobin`]: every partition, in `(topic, partition)` order, goes to the next
//!   member on the ring (member order) at or after a cursor that subscribes to its topic; the
//!   cursor then moves past that member.
//! - [`Strategy::CooperativeSticky`]: balanced like round-robin, but each member keeps its
//!   previous partitions up to its quota; only the surplus and unowned partitions move:
//!   1. *Claims.* A previous partition is claimed if its topic exists, the partition is below
//!      the topic's count and the member still subscribes to the topic. A partition claimed by
//!      several members is claimed by the first of them in member order.
//!   2. *Quotas.* A dry run deals every partition, most constrained topic first (fewest
//!      subscribers, then name), to its least-loaded subscriber; ties go to the member with
//!      more claims, then member order. A member's quota is its count in the dry run. When all
//!      members subscribe to the same topics this is `floor(P / n)` or `ceil(P / n)`, the ceil
//!      going to the members with the most claims, which is what bounds movement: adding a
//!      member to a balanced group moves at most `ceil(P / (n + 1))` partitions, removing one
//!      moves only its partitions, and an empty `previous` gives a balanced assignment.
//!   3. *Keep.* Each member keeps at most its quota of its claims, those of the most
//!      constrained topics first, then by partition.
//!   4. *Fill.* The rest, most constrained topic first, each go to the subscriber furthest
//!      below its quota; among equals the partition's previous owner, then the least loaded,
//!      then member order.
//!
//!   With mixed subscriptions the same steps run; the dry run is greedy, so the result is
//!   balanced-ish rather than optimal, and the movement bounds above are not promised: a member
//!   may lose claims beyond a changed quota, and may lose some claims while gaining others.
//!
//! # Determinism
//!
//! The output depends only on the set of members, not on their order in the slice. Members
//! are ordered by `(instance_id.unwrap_or(member_id), member_id)`, so a static member keeps
//! its place across restarts. Entries sharing a `member_id` (a coordinator bug, but not one to
//! panic on) are one member: the union of their topics and previous partitions, sorted by the
//! smallest of their sort names. The output has one entry per distinct member id.
//!
//! # Complexity
//!
//! With `P` partitions of subscribed topics, `n` members, `T` topics, `S` subscriptions and
//! `C` previous partitions in total: `O(S log T + C log T + P log n)` time and
//! `O(P + S + n)` memory for every strategy (`C` only for cooperative sticky).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// A topic name and a partition index.
pub type TopicPartition = (String, u32);

/// How a group spreads partitions over its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Per topic, contiguous ranges of partitions to members in order (Kafka's range).
    Range,
    /// All subscribed partitions, in (topic, partition) order, dealt to members in turn,
    /// skipping members not subscribed to the partition's topic.
    RoundRobin,
    /// Balanced like round-robin, but every member keeps as many of its `previous`
    /// partitions as balance allows; only the surplus moves (cooperative rebalancing moves
    /// only those).
    CooperativeSticky,
}

/// One member as the assignor sees it.
#[derive(Clone, Debug)]
pub struct MemberInput<'a> {
    pub member_id: &'a str,
    /// Static members sort by their instance id, so a restart keeps their place.
    pub instance_id: Option<&'a str>,
    pub topics: &'a BTreeSet<String>,
    /// The member's partitions in the previous target assignment (used by CooperativeSticky only).
    pub previous: &'a BTreeSet<TopicPartition>,
}

/// The target assignment: member id -> partitions. Every member of `members` has an entry
/// (possibly empty). `partition_counts` gives the number of partitions of each topic that
/// exists; subscribed topics missing from it are ignored.
pub fn assign(
    strategy: Strategy,
    members: &[MemberInput<'_>],
    partition_counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let group = Group::new(members, partition_counts);
    let owners = match strategy {
        Strategy::Range => assign_range(&group),
        Strategy::RoundRobin => assign_round_robin(&group),
        Strategy::CooperativeSticky => assign_cooperative_sticky(&group),
    };
    group.into_assignment(&owners)
}

/// The member index owning each partition, per topic index. A topic nobody subscribes to has
/// no entries.
type Owners = Vec<Vec<usize>>;

/// A topic that exists with at least one partition.
struct Topic<'a> {
    name: &'a str,
    partition_count: u32,
    /// Indexes into [`Group::members`] of its subscribers, ascending (member order).
    subscribers: Vec<usize>,
}

/// A member after duplicate ids merge, its subscriptions resolved to topic indexes.
struct Member<'a> {
    member_id: &'a str,
    /// Indexes into [`Group::topics`] of the existing topics it subscribes to, ascending.
    topics: Vec<usize>,
    /// The `previous` sets of every input entry with this member id.
    previous: Vec<&'a BTreeSet<TopicPartition>>,
}

/// The assignor's view of a group: members in member order, topics in name order.
struct Group<'a> {
    members: Vec<Member<'a>>,
    topics: Vec<Topic<'a>>,
    topic_index: BTreeMap<&'a str, usize>,
}

/// Input entries grouped by member id, in member order: `(sort name, member id)`, where the
/// sort name of a repeated id is the smallest of its entries'.
fn entries_by_member<'b, 'a>(
    inputs: &'b [MemberInput<'a>],
) -> Vec<(&'a str, Vec<&'b MemberInput<'a>>)> {
    let mut by_id: BTreeMap<&'a str, Vec<&'b MemberInput<'a>>> = BTreeMap::new();
    for input in inputs {
        by_id.entry(input.member_id).or_default().push(input);
    }
    let sort_name = |entries: &[&MemberInput<'a>]| {
        let names = entries
            .iter()
            .map(|entry| entry.instance_id.unwrap_or(entry.member_id));
        names.min()
    };
    let mut ordered: Vec<_> = by_id.into_iter().collect();
    ordered.sort_by_cached_key(|(member_id, entries)| (sort_name(entries), *member_id));
    ordered
}

impl<'a> Group<'a> {
    fn new(inputs: &[MemberInput<'a>], partition_counts: &'a BTreeMap<String, u32>) -> Self {
        let mut topics: Vec<Topic<'a>> = (partition_counts.iter())
            .filter(|(_, &count)| count > 0)
            .map(|(name, &partition_count)| Topic {
                name,
                partition_count,
                subscribers: Vec::new(),
            })
            .collect();
        let topic_index: BTreeMap<&'a str, usize> = (topics.iter().enumerate())
            .map(|(index, topic)| (topic.name, index))
            .collect();
        let mut members = Vec::with_capacity(inputs.len());
        for (member_index, (member_id, entries)) in
            entries_by_member(inputs).into_iter().enumerate()
        {
            let mut subscribed: Vec<usize> = (entries.iter())
                .flat_map(|entry| entry.topics.iter())
                .filter_map(|name| topic_index.get(name.as_str()).copied())
                .collect();
            subscribed.sort_unstable();
            subscribed.dedup();
            for &topic in &subscribed {
                topics[topic].subscribers.push(member_index);
            }
            let previous = entries.iter().map(|entry| entry.previous).collect();
            members.push(Member {
                member_id,
                topics: subscribed,
                previous,
            });
        }
        Group {
            members,
            topics,
            topic_index,
        }
    }

    /// Topic indexes with subscribers, fewest subscribers first, then by name.
    fn topics_most_constrained_first(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.topics.len())
            .filter(|&topic| !self.topics[topic].subscribers.is_empty())
            .collect();
        order.sort_by_key(|&topic| (self.topics[topic].subscribers.len(), topic));
        order
    }

    /// Turns per-partition owners into the member id -> partitions map.
    fn into_assignment(self, owners: &Owners) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        assert_eq!(owners.len(), self.topics.len(), "one owner list per topic");
        let mut partitions_by_member = vec![BTreeSet::new(); self.members.len()];
        for (topic_index, (topic, topic_owners)) in self.topics.iter().zip(owners).enumerate() {
            let expected_len = if topic.subscribers.is_empty() {
                0
            } else {
                topic.partition_count as usize
            };
            assert_eq!(topic_owners.len(), expected_len, "topic {}", topic.name);
            for (partition, &owner) in (0..topic.partition_count).zip(topic_owners) {
                let member = &self.members[owner];
                assert!(
                    member.topics.binary_search(&topic_index).is_ok(),
                    "{}/{partition} given to {} which subscribes to {:?}",
                    topic.name,
                    member.member_id,
                    member.topics,
                );
                partitions_by_member[owner].insert((topic.name.to_owned(), partition));
            }
        }
        (self.members.iter())
            .zip(partitions_by_member)
            .map(|(member, partitions)| (member.member_id.to_owned(), partitions))
            .collect()
    }
}

fn assign_range(group: &Group<'_>) -> Owners {
    group.topics.iter().map(range_owners).collect()
}

/// Contiguous blocks of `topic`'s partitions for its subscribers in order; the first
/// `partition_count % subscribers` blocks are one longer.
fn range_owners(topic: &Topic<'_>) -> Vec<usize> {
    let subscriber_count = topic.subscribers.len();
    if subscriber_count == 0 {
        return Vec::new();
    }
    let partition_count = topic.partition_count as usize;
    let block_len_min = partition_count / subscriber_count;
    let longer_blocks = partition_count % subscriber_count;
    let mut owners = Vec::with_capacity(partition_count);
    for (rank, &member) in topic.subscribers.iter().enumerate() {
        let block_len = block_len_min + usize::from(rank < longer_blocks);
        owners.extend(std::iter::repeat_n(member, block_len));
    }
    owners
}

fn assign_round_robin(group: &Group<'_>) -> Owners {
    let mut cursor = 0;
    let mut owners = Vec::with_capacity(group.topics.len());
    for topic in &group.topics {
        let mut topic_owners = Vec::new();
        if !topic.subscribers.is_empty() {
            topic_owners.reserve(topic.partition_count as usize);
            for _ in 0..topic.partition_count {
                let owner = first_subscriber_from(&topic.subscribers, cursor);
                topic_owners.push(owner);
                cursor = owner + 1;
            }
        }
        owners.push(topic_owners);
    }
    owners
}

/// The first of `subscribers` (ascending member indexes) at or after `cursor` on the ring of
/// members: `O(log n)` instead of stepping over every unsubscribed member.
fn first_subscriber_from(subscribers: &[usize], cursor: usize) -> usize {
    assert!(!subscribers.is_empty(), "cursor {cursor}: no subscribers");
    let rank = subscribers.partition_point(|&member| member < cursor);
    subscribers[if rank == subscribers.len() { 0 } else { rank }]
}

fn assign_cooperative_sticky(group: &Group<'_>) -> Owners {
    let topic_order = group.topics_most_constrained_first();
    let mut topic_rank = vec![usize::MAX; group.topics.len()];
    for (rank, &topic) in topic_order.iter().enumerate() {
        topic_rank[topic] = rank;
    }
    let claims = Claims::resolve(group);
    let quotas = dry_run_quotas(group, &topic_order, &claims.by_member);
    let mut plan = StickyPlan::empty(group);
    plan.keep_claims(&claims.by_member, &quotas, &topic_rank);
    plan.fill(group, &topic_order, &quotas, &claims.claimant);
    plan.into_owners()
}

/// Valid previous partitions (see the module doc), each with exactly one claimant.
struct Claims {
    /// Per member index: its claimed `(topic index, partition)`s.
    by_member: Vec<Vec<(usize, u32)>>,
    /// Per topic index and partition: the member index claiming it.
    claimant: Vec<Vec<Option<usize>>>,
}

impl Claims {
    fn resolve(group: &Group<'_>) -> Self {
        let mut claimant: Vec<Vec<Option<usize>>> = group.topics.iter().map(unowned).collect();
        let mut by_member = vec![Vec::new(); group.members.len()];
        for (member_index, member) in group.members.iter().enumerate() {
            for (name, partition) in member.previous.iter().flat_map(|set| set.iter()) {
                let Some(&topic) = group.topic_index.get(name.as_str()) else {
                    continue; // The topic was deleted.
                };
                if member.topics.binary_search(&topic).is_err() {
                    continue; // The member unsubscribed.
                }
                let Some(slot) = claimant[topic].get_mut(*partition as usize) else {
                    continue; // The topic shrank (recreated with fewer partitions).
                };
                if slot.is_none() {
                    *slot = Some(member_index);
                    by_member[member_index].push((topic, *partition));
                }
            }
        }
        Claims {
            by_member,
            claimant,
        }
    }
}

/// One empty slot per partition of `topic`, or none if nobody subscribes to it.
fn unowned(topic: &Topic<'_>) -> Vec<Option<usize>> {
    if topic.subscribers.is_empty() {
        Vec::new()
    } else {
        vec![None; topic.partition_count as usize]
    }
}

/// Each member's count in a from-scratch deal: every partition, most constrained topic first,
/// to its least-loaded subscriber; ties to more claims, then member order.
fn dry_run_quotas(
    group: &Group<'_>,
    topic_order: &[usize],
    claims: &[Vec<(usize, u32)>],
) -> Vec<usize> {
    let mut loads = vec![0_usize; group.members.len()];
    for &topic in topic_order {
        let subscribers = &group.topics[topic].subscribers;
        let mut least_loaded: BinaryHeap<Reverse<(usize, Reverse<usize>, usize)>> = (subscribers
            .iter())
        .map(|&member| Reverse((loads[member], Reverse(claims[member].len()), member)))
        .collect();
        for _ in 0..group.topics[topic].partition_count {
            let Some(Reverse((load, more_claims, member))) = least_loaded.pop() else {
                unreachable!("topic {topic} in the order has subscribers {subscribers:?}");
            };
            loads[member] = load + 1;
            least_loaded.push(Reverse((load + 1, more_claims, member)));
        }
    }
    loads
}

/// Cooperative sticky's working state: who owns what so far, and how much each member holds.
struct StickyPlan {
    owners: Vec<Vec<Option<usize>>>,
    loads: Vec<usize>,
}

/// Fill order among a topic's subscribers: furthest below quota, then least loaded, then
/// member order.
type FillRank = (i64, usize, usize);

fn fill_rank(load: usize, quota: usize, member: usize) -> FillRank {
    (load as i64 - quota as i64, load, member)
}

impl StickyPlan {
    fn empty(group: &Group<'_>) -> Self {
        StickyPlan {
            owners: group.topics.iter().map(unowned).collect(),
            loads: vec![0; group.members.len()],
        }
    }

    fn give(&mut self, topic: usize, partition: u32, member: usize) {
        let slot = &mut self.owners[topic][partition as usize];
        assert!(
            slot.is_none(),
            "{topic}/{partition} owned by {slot:?}, given to {member}"
        );
        *slot = Some(member);
        self.loads[member] += 1;
    }

    /// Each member keeps up to its quota of its claims, most constrained topics first.
    fn keep_claims(
        &mut self,
        claims: &[Vec<(usize, u32)>],
        quotas: &[usize],
        topic_rank: &[usize],
    ) {
        for (member, member_claims) in claims.iter().enumerate() {
            let mut kept = member_claims.clone();
            kept.sort_unstable_by_key(|&(topic, partition)| (topic_rank[topic], partition));
            kept.truncate(quotas[member]);
            for (topic, partition) in kept {
                self.give(topic, partition, member);
            }
        }
    }

    /// Gives every unowned partition to a subscriber, most constrained topic first.
    fn fill(
        &mut self,
        group: &Group<'_>,
        topic_order: &[usize],
        quotas: &[usize],
        claimant: &[Vec<Option<usize>>],
    ) {
        for &topic in topic_order {
            let unowned_partitions: Vec<u32> = (0..group.topics[topic].partition_count)
                .filter(|&partition| self.owners[topic][partition as usize].is_none())
                .collect();
            if unowned_partitions.is_empty() {
                continue;
            }
            let rank =
                |plan: &Self, member: usize| fill_rank(plan.loads[member], quotas[member], member);
            let mut candidates: BTreeSet<FillRank> = (group.topics[topic].subscribers.iter())
                .map(|&member| rank(self, member))
                .collect();
            for partition in unowned_partitions {
                let Some(&(best_overshoot, _, best_member)) = candidates.first() else {
                    unreachable!("topic {topic} in the order has subscribers");
                };
                let member = match claimant[topic][partition as usize] {
                    Some(previous) if rank(self, previous).0 == best_overshoot => previous,
                    _ => best_member,
                };
                let removed = candidates.remove(&rank(self, member));
                assert!(removed, "member {member} is a candidate for topic {topic}");
                self.give(topic, partition, member);
                candidates.insert(rank(self, member));
            }
        }
    }

    fn into_owners(self) -> Owners {
        let owner_of = |topic: usize, partition: usize, slot: Option<usize>| {
            slot.unwrap_or_else(|| panic!("{topic}/{partition} left unowned by the fill"))
        };
        (self.owners.into_iter().enumerate())
            .map(|(topic, slots)| {
                (slots.into_iter().enumerate())
                    .map(|(partition, slot)| owner_of(topic, partition, slot))
                    .collect()
            })
            .collect()
    }
}
