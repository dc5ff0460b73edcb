//! `connections(nodeId, depth, first)`: the neighbourhood of any node for the graph explorer,
//! one or two hops out, bounded by `first` nodes, taken in a fixed order (see
//! [`NEIGHBOUR_RANK`]). Each hop costs one query per label present in its frontier; the
//! result is cached like every other read.

use std::collections::{BTreeMap, HashSet};

use async_graphql::{Context, Enum, ID, Result, SimpleObject};
use serde::{Deserialize, Serialize};

use super::errors::{graph_down, page_size, validation};
use super::types::loaders;
use crate::cache;
use crate::canon;
use crate::graph::{Graph, GraphError, get_text, texts};
use crate::ids::{ChapterId, PassageId, StrongsId, TopicId};

/// What kind of node a graph node is.
#[derive(
    Enum, Copy, Clone, Eq, PartialEq, Debug, Serialize, Deserialize, Hash, PartialOrd, Ord,
)]
pub enum NodeKind {
    Book,
    Chapter,
    Passage,
    LexiconEntry,
    Topic,
}

impl NodeKind {
    fn label(self) -> &'static str {
        match self {
            Self::Book => "Book",
            Self::Chapter => "Chapter",
            Self::Passage => "Passage",
            Self::LexiconEntry => "LexiconEntry",
            Self::Topic => "Topic",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        [
            Self::Book,
            Self::Chapter,
            Self::Passage,
            Self::LexiconEntry,
            Self::Topic,
        ]
        .into_iter()
        .find(|k| k.label() == label)
    }

    /// The kind an id has by its form; `None` when it is no content id at all.
    pub fn of_id(id: &str) -> Option<Self> {
        if PassageId::parse(id).is_ok() {
            Some(Self::Passage)
        } else if ChapterId::parse(id).is_ok() {
            Some(Self::Chapter)
        } else if TopicId::parse(id).is_ok() {
            Some(Self::Topic)
        } else if StrongsId::parse_canonical(id).is_ok() {
            Some(Self::LexiconEntry)
        } else if canon::book(id).is_some() {
            Some(Self::Book)
        } else {
            None
        }
    }
}

#[derive(SimpleObject, Clone, Serialize, Deserialize)]
pub struct GraphNode {
    pub id: ID,
    pub kind: NodeKind,
    /// A readable name: a reference, a topic's name, a lemma, a title.
    pub label: String,
}

#[derive(SimpleObject, Clone, Serialize, Deserialize)]
pub struct GraphEdge {
    pub from: ID,
    pub to: ID,
    /// The relationship: `CROSS_REF`, `CITES`, `SEE_ALSO`, `RELATED_TO`, `NEXT`, `HAS_VERSE`, `HAS_CHAPTER`.
    pub kind: String,
}

/// A node's neighbourhood.
#[derive(SimpleObject, Clone, Serialize, Deserialize)]
pub struct GraphNeighborhood {
    /// The starting node first.
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Whether `first` cut the neighbourhood short.
    pub truncated: bool,
}

/// The relationships the explorer follows (word alignments are left to `Passage.words`).
const EDGES: &str = "CROSS_REF|CITES|SEE_ALSO|RELATED_TO|NEXT|HAS_VERSE|HAS_CHAPTER";

/// The order in which a hop's neighbours are taken, so that `first` keeps the same, most
/// telling ones every time (not whatever order the graph stores them in): what holds the node
/// or what it holds (book, chapter, verses), then its neighbours in reading order, then its
/// cross-references, then the topics that cite it, then related entries and topics.
const NEIGHBOUR_RANK: &str = "CASE type(e) WHEN 'HAS_CHAPTER' THEN 0 WHEN 'HAS_VERSE' THEN 0 \
     WHEN 'NEXT' THEN 1 WHEN 'CROSS_REF' THEN 2 WHEN 'CITES' THEN 3 ELSE 4 END";

/// Within a rank: a cross-reference's own order, a citation's line, a verse's or chapter's
/// number; ties (and everything else) by the neighbour's id.
const NEIGHBOUR_POSITION: &str = "coalesce(e.ord, e.line, m.verse, m.number, 0)";

fn readable(kind: NodeKind, id: &str, name: Option<String>) -> String {
    match kind {
        NodeKind::Passage => PassageId::parse(id)
            .map(|p| p.reference())
            .unwrap_or_else(|_| id.to_owned()),
        NodeKind::Chapter => ChapterId::parse(id)
            .map(|c| c.reference())
            .unwrap_or_else(|_| id.to_owned()),
        NodeKind::Book => canon::book(id).map_or_else(|| id.to_owned(), |b| b.title.to_owned()),
        NodeKind::LexiconEntry | NodeKind::Topic => name.unwrap_or_else(|| id.to_owned()),
    }
}

async fn explore(
    graph: &Graph,
    start: (NodeKind, String),
    depth: usize,
    limit: usize,
) -> Result<Option<GraphNeighborhood>, GraphError> {
    let (kind, id) = start;
    let rows = graph
        .read(
            &format!(
                "MATCH (n:{} {{id: $id}}) RETURN n.id AS id, coalesce(n.name, n.lemma) AS name",
                kind.label()
            ),
            vec![("id", crate::graph::text(&id))],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut nodes = vec![GraphNode {
        id: ID(id.clone()),
        kind,
        label: readable(kind, &id, get_text(row, "name")),
    }];
    let mut seen: HashSet<String> = HashSet::from([id.clone()]);
    let mut edges = Vec::new();
    let mut edge_keys = HashSet::new();
    let mut frontier = vec![(kind, id)];
    let mut truncated = false;
    for _ in 0..depth {
        let mut by_label: BTreeMap<NodeKind, Vec<String>> = BTreeMap::new();
        for (kind, id) in frontier.drain(..) {
            by_label.entry(kind).or_default().push(id);
        }
        let mut next = Vec::new();
        for (kind, ids) in by_label {
            let rows = graph
                .read(
                    &format!(
                        "UNWIND $ids AS id MATCH (n:{} {{id: id}})-[e:{EDGES}]-(m) \
                         RETURN type(e) AS kind, startNode(e).id AS source, endNode(e).id AS target, \
                                labels(m)[0] AS label, m.id AS neighbour, coalesce(m.name, m.lemma) AS name, \
                                {NEIGHBOUR_RANK} AS rank, {NEIGHBOUR_POSITION} AS position \
                         ORDER BY rank, position, neighbour LIMIT $limit",
                        kind.label()
                    ),
                    vec![("ids", texts(ids)), ("limit", crate::graph::int(limit as i64 * 4))],
                )
                .await?;
            for row in &rows {
                let (Some(edge_kind), Some(source), Some(target), Some(label), Some(neighbour)) = (
                    get_text(row, "kind"),
                    get_text(row, "source"),
                    get_text(row, "target"),
                    get_text(row, "label"),
                    get_text(row, "neighbour"),
                ) else {
                    continue;
                };
                let Some(neighbour_kind) = NodeKind::from_label(&label) else {
                    continue;
                };
                if !seen.contains(&neighbour) {
                    if nodes.len() >= limit {
                        truncated = true;
                        continue;
                    }
                    seen.insert(neighbour.clone());
                    nodes.push(GraphNode {
                        id: ID(neighbour.clone()),
                        kind: neighbour_kind,
                        label: readable(neighbour_kind, &neighbour, get_text(row, "name")),
                    });
                    next.push((neighbour_kind, neighbour));
                }
                if edge_keys.insert((source.clone(), target.clone(), edge_kind.clone())) {
                    edges.push(GraphEdge {
                        from: ID(source),
                        to: ID(target),
                        kind: edge_kind,
                    });
                }
            }
        }
        frontier = next;
    }
    // Keep only edges between nodes we return.
    edges.retain(|e| seen.contains(e.from.as_str()) && seen.contains(e.to.as_str()));
    Ok(Some(GraphNeighborhood {
        nodes,
        edges,
        truncated,
    }))
}

pub async fn connections(
    ctx: &Context<'_>,
    node_id: ID,
    depth: Option<i32>,
    first: Option<i32>,
) -> Result<Option<GraphNeighborhood>> {
    let depth = depth.unwrap_or(1);
    if !(1..=2).contains(&depth) {
        return Err(validation(format!("`depth` must be 1 or 2, got {depth}")));
    }
    let first = page_size(first, 50)?;
    let Some(kind) = NodeKind::of_id(&node_id) else {
        return Err(validation(format!(
            "malformed node id {:?}: expected a passage, chapter, book, lexicon or topic id",
            node_id.as_str()
        )));
    };
    let loaders = loaders(ctx);
    // Not `explore:`, the key of the answers written before neighbours were ordered: those are
    // never read again (and expire with their TTL), so no cache serves the old order.
    let key = format!("connections:{}:{depth}:{first}", node_id.as_str());
    let graph = loaders.stores.graph.clone();
    // Only what exists is kept: any well-formed id may be asked, so keeping "not found" would
    // let callers write keys without bound.
    let found = loaders
        .cached_if(
            cache::LISTS,
            &key,
            async move { explore(&graph, (kind, node_id.to_string()), depth as usize, first).await },
            Option::is_some,
        )
        .await
        .map_err(graph_down)?;
    Ok(found)
}
